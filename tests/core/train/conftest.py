"""Fixtures for the training tests: one tiny synthetic RGB-D scene with label features."""

from __future__ import annotations

import pytest

from m3_core.data import load_dataset, make_synthetic_scene


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "scene"
    make_synthetic_scene(root, num_frames=16, width=80, height=60, feature_stride=4)
    return load_dataset(root)
