"""The trainer's ``export_ply`` option: ``MEM/gaussians.ply`` beside a finished memory."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

pytest.importorskip("rclpy")
from m3_core.config import MemoryConfig  # noqa: E402
from m3_core.memory import Memory  # noqa: E402
from m3_core.splat import load_ply  # noqa: E402
from m3_core.types import ModelSpec  # noqa: E402
from m3_ros.train_goal import PLY_NAME, export_ply_beside  # noqa: E402
from m3_ros.trainer import PARAMS  # noqa: E402


def small_memory(n: int = 20) -> Memory:
    g = torch.Generator().manual_seed(5)
    gaussians = {
        "means": torch.randn(n, 3, generator=g),  # [N, 3]
        "scales": torch.randn(n, 3, generator=g),  # [N, 3] log
        "quats": torch.randn(n, 4, generator=g),  # [N, 4] wxyz
        "opacities": torch.randn(n, generator=g),  # [N] logit
        "sh0": torch.randn(n, 1, 3, generator=g),  # [N, 1, 3]
        "shN": torch.randn(n, 3, 3, generator=g),  # [N, 3, 3] (SH degree 1)
        "queries": torch.randn(n, 4, generator=g),  # [N, Q]
    }
    config = MemoryConfig(models=[ModelSpec("labels", 8, 4, 0.9)], sh_degree=1)
    return Memory.create(config, gaussians, {"labels": torch.randn(3, 8, generator=g)})


def test_off_by_default():
    assert PARAMS["export_ply"] is False


def test_writes_the_standard_ply_beside_the_memory(tmp_path):
    memory = small_memory()
    memory.save(tmp_path / "mem")
    path = export_ply_beside(memory, tmp_path / "mem")
    assert path == tmp_path / "mem" / PLY_NAME
    back = load_ply(path)
    assert back["queries"].shape == (20, 0)  # Gaussians only, as viewers want
    for key in ("means", "scales", "quats", "opacities", "sh0", "shN"):  # float32 as stored
        assert_close(back[key].detach(), memory.gaussians[key].detach(), rtol=0, atol=0)
    assert Memory.load(tmp_path / "mem").num_gaussians == 20  # the memory is untouched


def test_a_failed_export_is_logged_not_raised(tmp_path):
    (tmp_path / "mem" / PLY_NAME).mkdir(parents=True)  # a folder where the file should go
    logged: list[str] = []
    assert export_ply_beside(small_memory(), tmp_path / "mem", logged.append) is None
    assert len(logged) == 1 and "is a folder" in logged[0]
