"""Render a memory's Gaussians at a camera: RGB, expected depth, alpha and the query map.

The query channels are composited exactly like colour but with **no background term**
(Q(p) = sum_i q_i alpha_i T_i, as in M3); RGB gets the optional background. One rasterizer call
renders everything unless ``detach_query_geometry`` is set: then the queries are rendered in a
second pass with detached geometry, so a loss on them trains only the queries (the released
M3 rasterizer's behaviour), at twice the rasterization cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from m3_core.types import Camera


@dataclass
class RenderOutput:
    rgb: torch.Tensor  # [H, W, 3]
    depth: torch.Tensor  # [H, W] expected depth (alpha-normalised, metres); 0 where empty
    alpha: torch.Tensor  # [H, W]
    queries: torch.Tensor  # [H, W, Q] composited principal queries (no background)
    meta: dict[str, Any] = field(default_factory=dict)  # rasterizer meta (densification)


def gaussian_colors(params: Mapping[str, torch.Tensor], campos: torch.Tensor, sh_degree: int):
    """View-dependent RGB of every Gaussian seen from ``campos`` [3] -> [N, 3]
    (gsplat's convention: max(SH(dir) + 0.5, 0))."""
    from m3_core.splat import eval_sh

    coeffs = torch.cat([params["sh0"], params["shN"]], dim=1)  # [N, K, 3]
    k = (sh_degree + 1) ** 2
    dirs = params["means"] - campos[None, :]  # [N, 3]
    return torch.clamp_min(eval_sh(sh_degree, coeffs[:, :k], dirs) + 0.5, 0.0)


def render_gaussians(
    params: Mapping[str, torch.Tensor],
    camera: Camera,
    *,
    sh_degree: int,
    background: torch.Tensor | None = None,  # [3] RGB background
    with_queries: bool = True,
    detach_query_geometry: bool = False,
    backend: str = "auto",
) -> RenderOutput:
    """Rasterize Gaussian parameters (the ParameterDict layout of ``m3_core.splat``)."""
    from m3_core.splat import rasterize

    device = params["means"].device
    cam = camera.to(device)
    means = params["means"]  # [N, 3]
    quats = params["quats"]  # [N, 4]
    scales = torch.exp(params["scales"])  # [N, 3]
    opacities = torch.sigmoid(params["opacities"])  # [N]
    rgb = gaussian_colors(params, cam.center.to(means.dtype), sh_degree)  # [N, 3]
    queries = params["queries"] if with_queries else None  # [N, Q]
    viewmats = cam.viewmat.to(device=device, dtype=means.dtype)[None]  # [1, 4, 4]
    Ks = cam.K.to(device=device, dtype=means.dtype)[None]  # [1, 3, 3]
    bg = torch.zeros(3, device=device, dtype=means.dtype) if background is None else background

    def raster(m, q, s, o, colors, bgs):
        return rasterize(
            m,
            q,
            s,
            o,
            colors,
            viewmats,
            Ks,
            cam.width,
            cam.height,
            render_mode="RGB+ED",
            backgrounds=bgs[None],
            backend=backend,
        )

    if queries is None or detach_query_geometry:
        out, alphas, meta = raster(means, quats, scales, opacities, rgb, bg)
        colour, depth = out[0, ..., :3], out[0, ..., 3]
        qmap = None
        if queries is not None:
            qbg = torch.zeros(queries.shape[1], device=device, dtype=means.dtype)
            qout, _, _ = raster(
                means.detach(), quats.detach(), scales.detach(), opacities.detach(), queries, qbg
            )
            qmap = qout[0, ..., :-1]
    else:
        colors = torch.cat([rgb, queries], dim=1)  # [N, 3 + Q]
        bgs = torch.cat([bg, torch.zeros(queries.shape[1], device=device, dtype=bg.dtype)])
        out, alphas, meta = raster(means, quats, scales, opacities, colors, bgs)
        colour, qmap, depth = out[0, ..., :3], out[0, ..., 3:-1], out[0, ..., -1]
    if qmap is None:
        qmap = torch.zeros(cam.height, cam.width, 0, device=device, dtype=means.dtype)
    return RenderOutput(rgb=colour, depth=depth, alpha=alphas[0, ..., 0], queries=qmap, meta=meta)


@torch.no_grad()
def render_memory(
    memory,
    camera: Camera,
    features: list[str] | tuple[str, ...] = (),
    *,
    backend: str = "auto",
) -> dict[str, torch.Tensor]:
    """Render a :class:`~m3_core.memory.Memory`: {"rgb" [H,W,3], "depth" [H,W], "alpha" [H,W],
    "<name>" [H,W,d_m] for each requested feature (GMA-decoded)}. Unknown names raise."""
    names = list(features)
    for n in names:
        memory.layout.slice(n)  # raises UnknownModelError listing the known names
    out = render_gaussians(
        memory.gaussians,
        camera,
        sh_degree=memory.config.sh_degree,
        with_queries=bool(names),
        backend=backend,
    )
    result = {"rgb": out.rgb.clamp(0, 1), "depth": out.depth, "alpha": out.alpha}
    for n in names:
        result[n] = memory.decode(n, out.queries[..., memory.layout.slice(n)])
    return result
