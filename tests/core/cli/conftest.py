"""Fixtures for the CLI tests: a tiny synthetic dataset and a memory trained on it."""

from __future__ import annotations

import shutil

import pytest

from m3_core.data import make_synthetic_scene
from m3_core.train import Trainer
from tests.fixtures.training import tiny_config


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "scene"
    make_synthetic_scene(root, num_frames=8, width=48, height=36, feature_stride=4)
    return root


@pytest.fixture(scope="session")
def memory_dir(scene_dir, tmp_path_factory):
    """A memory with the synthetic 'labels' feature (and its vocabulary), 5 steps trained."""
    from m3_core.data import load_dataset

    out = tmp_path_factory.mktemp("cli") / "mem"
    Trainer(load_dataset(scene_dir), tiny_config(iterations=5), out).run()
    return out


@pytest.fixture
def scene_copy(scene_dir, tmp_path):
    """A private copy of the dataset that a test may break."""
    dst = tmp_path / "data"
    shutil.copytree(scene_dir, dst)
    return dst


@pytest.fixture
def memory_copy(memory_dir, tmp_path):
    dst = tmp_path / "memcopy"
    shutil.copytree(memory_dir, dst)
    return dst
