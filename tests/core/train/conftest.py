"""Fixtures for the training tests: one tiny synthetic RGB-D scene with label features."""

from __future__ import annotations

import pytest

from m3_core.data import load_dataset, make_synthetic_scene
from m3_core.train import DensifyConfig, FeatureSpec, TrainConfig


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "scene"
    make_synthetic_scene(root, num_frames=16, width=80, height=60, feature_stride=4)
    return load_dataset(root)


def tiny_config(**over) -> TrainConfig:
    base = dict(
        features=[FeatureSpec("labels")],
        iterations=120,
        sh_degree=1,
        sh_degree_interval=40,
        depth_weight=0.1,
        init_points=3000,
        feature_samples=500,
        densify=DensifyConfig(refine_start_iter=40, refine_stop_iter=100, refine_every=40,
                              reset_every=10_000),
        save_every=0,
    )  # fmt: skip
    base.update(over)
    return TrainConfig(**base)
