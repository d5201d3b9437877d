"""Render a memory's Gaussians at a camera: RGB, expected depth, alpha and the query map.

The query channels are composited exactly like colour but with **no background term**
(Q(p) = sum_i q_i alpha_i T_i, as in M3); RGB gets the optional background. One rasterizer call
renders everything. With ``detach_query_geometry`` a loss on the queries trains only the queries
(the released M3 rasterizer's behaviour): the query channels are rasterized with
``detach_channels`` (same pass, no geometry gradient); ``one_pass=False`` is the slow twin that
renders them in a second pass with detached geometry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from m3_core.errors import InvalidInputError
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
    one_pass: bool = True,
    check_values: bool = True,
    geometry_backend: str = "auto",
) -> RenderOutput:
    """Rasterize Gaussian parameters (the ParameterDict layout of ``m3_core.splat``).
    ``check_values`` and ``geometry_backend`` go to :func:`m3_core.splat.rasterize`."""
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

    def raster(m, q, s, o, colors, bgs, detach=0):
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
            detach_channels=detach,
            check_values=check_values,
            geometry_backend=geometry_backend,
        )

    if queries is None or (detach_query_geometry and not one_pass):
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
        detach = queries.shape[1] if detach_query_geometry else 0
        out, alphas, meta = raster(means, quats, scales, opacities, colors, bgs, detach)
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
    decode: bool = True,
    feature_stride: int = 1,
    check: Callable[[str], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Render a :class:`~m3_core.memory.Memory`: {"rgb" [H,W,3], "depth" [H,W], "alpha" [H,W],
    "<name>" [h,w,d_m] for each requested feature (GMA-decoded)}. Unknown names raise.

    ``feature_stride`` k > 1 gives feature maps of [ceil(H/k), ceil(W/k)]: the rendered queries
    averaged over k x k pixel blocks (queries composite linearly, so this is a box-filtered
    render), then decoded. ``decode=False`` returns each feature's rendered query channels
    [h, w, s_m] instead (decode them later with ``memory.decode``). ``check(stage)`` is called
    after rasterizing and after each feature; raising in it stops the render (time budgets).
    """
    names = list(features)
    for n in names:
        memory.layout.slice(n)  # raises UnknownModelError listing the known names
    if int(feature_stride) < 1:
        raise InvalidInputError(f"feature_stride must be >= 1, got {feature_stride}")
    out = render_gaussians(
        memory.gaussians,
        camera,
        sh_degree=memory.config.sh_degree,
        with_queries=bool(names),
        backend=backend,
    )
    result = {"rgb": out.rgb.clamp(0, 1), "depth": out.depth, "alpha": out.alpha}
    if check is not None:
        check("rasterize")
    q = out.queries  # [H, W, Q]
    if names and feature_stride > 1:
        k = int(feature_stride)
        pooled = F.avg_pool2d(q.permute(2, 0, 1)[None], k, k, ceil_mode=True)
        q = pooled[0].permute(1, 2, 0)  # [ceil(H/k), ceil(W/k), Q]
    for n in names:
        sl = q[..., memory.layout.slice(n)]  # [h, w, s_m]
        result[n] = memory.decode(n, sl) if decode else sl.clone()
        if check is not None:
            check(n)
    return result
