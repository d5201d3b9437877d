"""Dense brute-force compositor in float64: the slow reference for the tile backends.

Every Gaussian is evaluated against every pixel ([P, N] per image), with the same culling as
the tile backends: radii > 0 and the pixel's tile inside the Gaussian's tile rectangle
(without tile culling the result differs by ~1e-3 for reasons that are not bugs). Gaussians
are sorted by depth (stable), transmittance is a plain ``cumprod`` and the "stop once
T <= 1e-4" rule a prefix mask. Pixel chunks are gradient-checkpointed to bound memory.
Outputs are cast back to the input dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from m3_core.splat.projection import tile_grid
from m3_core.splat.tiles import tile_ranges

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4


def _dense_chunk(
    pix: Tensor,  # [P, 2] pixel centres
    cover: Tensor,  # [P, N] bool: tile culling and radii
    xy: Tensor,  # [N, 2] (depth-sorted)
    con: Tensor,  # [N, 3]
    op: Tensor,  # [N]
    col: Tensor,  # [N, D]
    n_geo: int,
) -> tuple[Tensor, Tensor]:
    dx = xy[None, :, 0] - pix[:, None, 0]  # [P, N]
    dy = xy[None, :, 1] - pix[:, None, 1]
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    alpha = torch.clamp(op * torch.exp(-sigma), max=ALPHA_MAX)
    keep = cover & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    with torch.no_grad():
        included = torch.cumprod(one_minus, dim=-1) > T_MIN
    alpha = torch.where(included, alpha, torch.zeros_like(alpha))
    one_minus = 1.0 - alpha
    t_after = torch.cumprod(one_minus, dim=-1)  # [P, N]
    t_before = torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], dim=-1)
    weights = alpha * t_before  # [P, N]
    out = weights @ col[:, :n_geo]  # [P, n_geo]
    if n_geo < col.shape[1]:  # detached channels: the same weights, no geometry gradient
        out = torch.cat([out, weights.detach() @ col[:, n_geo:]], dim=-1)  # [P, D]
    return out, t_after[:, -1] if t_after.shape[1] else torch.ones_like(pix[:, 0])


def composite_dense(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    opacities: Tensor,  # [I, N]
    colors: Tensor,  # [I, N, D]
    radii: Tensor,  # [I, N, 2] int32
    depths: Tensor,  # [I, N]
    width: int,
    height: int,
    tile_size: int = 16,
    *,
    pixel_chunk: int = 1024,
    n_geo: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Brute-force composite -> (render [I, H, W, D], alphas [I, H, W, 1]) in colors.dtype.
    Channels from ``n_geo`` on get no geometry gradient (``composite``'s contract)."""
    out_dtype = colors.dtype
    f64 = torch.float64
    n_img, _, n_ch = colors.shape
    n_geo = n_ch if n_geo is None else n_geo
    dev = colors.device
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    x0, x1, y0, y1 = tile_ranges(means2d, radii, tile_size, tiles_x, tiles_y)  # [I, N]
    py, px = torch.meshgrid(
        torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij"
    )
    py, px = py.reshape(-1), px.reshape(-1)  # [P]
    pix = torch.stack([px, py], dim=-1).to(f64) + 0.5  # [P, 2]
    ptx = torch.div(px, tile_size, rounding_mode="floor")
    pty = torch.div(py, tile_size, rounding_mode="floor")
    grad = torch.is_grad_enabled()
    renders, alphas = [], []
    for i in range(n_img):
        order = torch.argsort(depths[i].detach(), stable=True)
        order = order[(radii[i, order] > 0).all(dim=-1)]
        xs0, xs1, ys0, ys1 = x0[i, order], x1[i, order], y0[i, order], y1[i, order]
        args = (
            means2d[i, order].to(f64),
            conics[i, order].to(f64),
            opacities[i, order].to(f64),
            colors[i, order].to(f64),
        )
        outs, ts = [], []
        for s in range(0, pix.shape[0], pixel_chunk):
            sl = slice(s, s + pixel_chunk)
            cover = (
                (ptx[sl, None] >= xs0)
                & (ptx[sl, None] < xs1)
                & (pty[sl, None] >= ys0)
                & (pty[sl, None] < ys1)
            )  # [p, n]
            if grad:
                o, t = checkpoint(_dense_chunk, pix[sl], cover, *args, n_geo, use_reentrant=False)
            else:
                o, t = _dense_chunk(pix[sl], cover, *args, n_geo)
            outs.append(o)
            ts.append(t)
        renders.append(torch.cat(outs).reshape(height, width, n_ch))
        alphas.append((1.0 - torch.cat(ts)).reshape(height, width, 1))
    return torch.stack(renders).to(out_dtype), torch.stack(alphas).to(out_dtype)
