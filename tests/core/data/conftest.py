"""Fixtures for the data tests: a synthetic scene (rendered once) and random poses."""

from __future__ import annotations

import math

import pytest
import torch

from m3_core.data import SceneDataset, make_synthetic_scene


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory: pytest.TempPathFactory) -> SceneDataset:
    """The default synthetic scene (24 frames, 160x120), written once per test session."""
    return make_synthetic_scene(tmp_path_factory.mktemp("synthetic") / "scene")


def random_c2w(gen: torch.Generator) -> torch.Tensor:
    """A random rigid camera-to-world [4, 4] float32 (rotation from a random quaternion)."""
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    w, x, y, z = (q / q.norm()).tolist()
    r = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, :3] = r
    c2w[:3, 3] = torch.randn(3, generator=gen, dtype=torch.float64) * 3
    return c2w.float()


def yaw_c2w(x: float, y: float, z: float, yaw: float) -> torch.Tensor:
    """OpenCV c2w [4, 4] at (x, y, z) looking horizontally along ``yaw`` (world z up)."""
    f = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
    right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
    down = torch.tensor([0.0, 0.0, -1.0])
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, f, torch.tensor([x, y, z])
    return c2w
