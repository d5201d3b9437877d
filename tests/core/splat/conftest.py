"""Fixtures for the splat tests: small random scenes in front of one or two cameras."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def make_scene(
    n: int = 60,
    width: int = 37,
    height: int = 29,
    n_cams: int = 1,
    n_ch: int = 4,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> dict:
    """Gaussians around z = 3 seen by ``n_cams`` cameras looking down +z (OpenCV frame).

    Odd image sizes make the last tile row/column partial. Scales are a mix of small and large
    so that some Gaussians cover several tiles, opacities span (0, 1).
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor(
        [0.8, 0.6, 0.5], dtype=dtype
    )
    means[:, 2] += 3.0
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.15 + 0.01
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.98 + 0.01
    colors = torch.rand(n, n_ch, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype).repeat(n_cams, 1, 1)
    for c in range(1, n_cams):  # small sideways shift + yaw for the other cameras
        ang = 0.15 * c
        viewmats[c, 0, 0] = viewmats[c, 2, 2] = torch.cos(torch.tensor(ang))
        viewmats[c, 0, 2] = torch.sin(torch.tensor(ang))
        viewmats[c, 2, 0] = -torch.sin(torch.tensor(ang))
        viewmats[c, 0, 3] = -0.3 * c
    f = 0.9 * width
    ks = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)
    return {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "colors": colors,
        "viewmats": viewmats,
        "Ks": ks.repeat(n_cams, 1, 1),
        "width": width,
        "height": height,
    }


PARAMS = ("means", "quats", "scales", "opacities", "colors")


@pytest.fixture
def scene() -> Callable[..., dict]:
    return make_scene
