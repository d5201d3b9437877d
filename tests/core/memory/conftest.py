"""Fixtures for the memory tests: tiny model specs, Gaussian dicts and memories."""

from __future__ import annotations

import pytest
import torch

from m3_core.config import MemoryConfig
from m3_core.memory import Memory
from m3_core.types import ModelSpec


def make_gaussians(n: int, query_dim: int, sh_degree: int = 1, seed: int = 0) -> dict:
    """A random Gaussian dict in the m3_core.splat layout (plain tensors)."""
    g = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return {
        "means": torch.randn(n, 3, generator=g),  # [N, 3]
        "scales": torch.randn(n, 3, generator=g) - 3.0,  # [N, 3] log
        "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1),  # [N, 4]
        "opacities": torch.randn(n, generator=g),  # [N] logit
        "sh0": torch.randn(n, 1, 3, generator=g),  # [N, 1, 3]
        "shN": torch.randn(n, k - 1, 3, generator=g) * 0.1,  # [N, K-1, 3]
        "queries": torch.randn(n, query_dim, generator=g),  # [N, Q]
    }


def clustered(n: int, d: int, k: int, noise: float, *, seed: int = 0, dtype=torch.float64):
    """n rows around k random centres (noise relative to the centre scale)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g, dtype=dtype)
    assign = torch.randint(0, k, (n,), generator=g)
    scale = noise * torch.rand(n, 1, generator=g, dtype=dtype)
    return centres[assign] + scale * torch.randn(n, d, generator=g, dtype=dtype)


@pytest.fixture
def specs() -> list[ModelSpec]:
    return [ModelSpec("clip", 12, 4, 0.8), ModelSpec("dino", 8, 6, 0.75)]


@pytest.fixture
def config(specs) -> MemoryConfig:
    return MemoryConfig(models=specs, sh_degree=1, gma_temperature=0.05)


@pytest.fixture
def banks(specs) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {s.name: torch.randn(5 + i, s.dim, generator=g) for i, s in enumerate(specs)}


@pytest.fixture
def memory(config, banks) -> Memory:
    return Memory.create(config, make_gaussians(40, config.query_dim), banks, seed=0)
