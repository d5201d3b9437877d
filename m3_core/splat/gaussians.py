"""Gaussian parameters: one ``torch.nn.ParameterDict`` in gsplat simple_trainer naming.

Keys (raw, un-activated values, so ``gsplat.DefaultStrategy`` can split / duplicate / prune
every entry together): "means" [N, 3], "scales" [N, 3] (log), "quats" [N, 4] (wxyz,
unnormalised), "opacities" [N] (logit), "sh0" [N, 1, 3], "shN" [N, (deg + 1)^2 - 1, 3],
"queries" [N, Q] (M3's principal queries). ``activated`` gives what ``rasterize`` takes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from m3_core.errors import InvalidInputError
from m3_core.splat.sh import num_sh_bases, rgb_to_sh

PARAM_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN", "queries")


def knn_mean_distance(points: Tensor, k: int = 3) -> Tensor:
    """Root-mean-square distance to the k nearest other points [N] (gsplat's init rule)."""
    n = points.shape[0]
    if n < 2:
        return torch.ones(n, dtype=points.dtype)
    pts = points.detach().cpu().double().numpy()
    kk = min(k, n - 1)
    dist, _ = cKDTree(pts).query(pts, k=kk + 1)  # [N, kk + 1], first is the point itself
    d = np.sqrt(np.mean(np.asarray(dist).reshape(n, kk + 1)[:, 1:] ** 2, axis=1))
    d = np.maximum(d, 1e-7)  # duplicate points would give log(0)
    return torch.from_numpy(d).to(points.dtype)


def init_gaussians(
    points: Tensor,  # [N, 3]
    colors: Tensor | None,  # [N, 3] in [0, 1]
    query_dim: int,
    sh_degree: int = 3,
    *,
    init_opacity: float = 0.1,
    init_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.nn.ParameterDict:
    """Initialise Gaussians like gsplat's simple_trainer, plus M3's query vectors.

    Scales: log(init_scale * RMS distance to the 3 nearest neighbours), isotropic.
    Quats: uniform random in [0, 1)^4. Opacities: logit(init_opacity). SH: DC from ``colors``
    (uniform random colours when None), higher bands zero. Queries: N(0, 0.01^2).
    The returned tensors live on ``points.device`` in ``points.dtype``.
    """
    if points.dim() != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise InvalidInputError(f"points must be [N>0, 3], got {tuple(points.shape)}")
    if not torch.isfinite(points).all():
        raise InvalidInputError("points contain NaN or infinite values")
    n = points.shape[0]
    if colors is not None and colors.shape != (n, 3):
        raise InvalidInputError(f"colors must be [{n}, 3], got {tuple(colors.shape)}")
    if query_dim < 0 or not 0 <= sh_degree <= 3:
        raise InvalidInputError(f"bad query_dim={query_dim} or sh_degree={sh_degree}")
    if not 0.0 < init_opacity < 1.0 or init_scale <= 0:
        raise InvalidInputError("init_opacity must be in (0, 1) and init_scale > 0")
    dev, dt = points.device, points.dtype
    g = generator

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g, dtype=dt).to(dev)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=dt).to(dev)

    rgb = rand(n, 3) if colors is None else colors.to(device=dev, dtype=dt)
    scales = torch.log(knn_mean_distance(points) * init_scale).to(dev)[:, None].repeat(1, 3)
    k = num_sh_bases(sh_degree)
    params = {
        "means": points.detach().clone(),
        "scales": scales,
        "quats": rand(n, 4),
        "opacities": torch.logit(torch.full((n,), init_opacity, dtype=dt, device=dev)),
        "sh0": rgb_to_sh(rgb)[:, None, :],
        "shN": torch.zeros(n, k - 1, 3, dtype=dt, device=dev),
        "queries": 0.01 * randn(n, query_dim),
    }
    return torch.nn.ParameterDict({k_: torch.nn.Parameter(v) for k_, v in params.items()})


def random_points(
    n: int,
    extent: float = 1.0,
    center: Tensor | tuple[float, float, float] = (0.0, 0.0, 0.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """n points uniform in the cube center +- extent [n, 3] (float32, CPU)."""
    c = torch.as_tensor(center, dtype=torch.float32)
    return (torch.rand(n, 3, generator=generator) * 2.0 - 1.0) * extent + c


def activated(params: torch.nn.ParameterDict) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(means [N, 3], unit quats [N, 4], scales exp [N, 3], opacities sigmoid [N])."""
    return (
        params["means"],
        torch.nn.functional.normalize(params["quats"], dim=-1),
        torch.exp(params["scales"]),
        torch.sigmoid(params["opacities"]),
    )


def sh_coeffs(params: torch.nn.ParameterDict) -> Tensor:
    """SH coefficients [N, K, 3] = cat(sh0, shN) for ``rasterize(..., sh_degree=...)``."""
    return torch.cat([params["sh0"], params["shN"]], dim=1)
