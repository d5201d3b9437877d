"""Pure-torch tile compositor: the twin of the numba kernels (plain autograd, any device).

Same rules as ``_numba_kernels``. Tiles are grouped into buckets by list length (next power of
two) and padded; per bucket, [tiles, pixels, L] alphas are computed at once, transmittance is a
log-cumsum, the "stop once T <= 1e-4" rule becomes the prefix mask T_after > 1e-4, and colours
are an einsum over any channel count. Chunks of tiles are gradient-checkpointed so that peak
memory stays bounded (about ``max_elems`` floats per intermediate).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from m3_core.splat.tiles import TileBins

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4


def _composite_chunk(
    pix: Tensor,  # [t, P, 2] pixel centres
    valid: Tensor,  # [t, L] bool (padding mask)
    xy: Tensor,  # [t, L, 2]
    con: Tensor,  # [t, L, 3]
    op: Tensor,  # [t, L]
    col: Tensor,  # [t, L, D]
    n_geo: int,
) -> tuple[Tensor, Tensor]:
    dx = xy[:, None, :, 0] - pix[:, :, None, 0]  # [t, P, L]
    dy = xy[:, None, :, 1] - pix[:, :, None, 1]
    a, b, c = (con[:, None, :, i] for i in range(3))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = (op[:, None, :] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
    keep = valid[:, None, :] & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    log_1m = torch.log1p(-alpha)
    with torch.no_grad():
        included = torch.exp(torch.cumsum(log_1m, dim=-1)) > T_MIN  # prefix of the list
    alpha = torch.where(included, alpha, torch.zeros_like(alpha))
    log_1m = torch.log1p(-alpha)
    csum = torch.cumsum(log_1m, dim=-1)
    t_before = torch.exp(csum - log_1m)  # [t, P, L]
    weights = alpha * t_before
    out = torch.einsum("tpl,tld->tpd", weights, col[..., :n_geo])  # [t, P, n_geo]
    if n_geo < col.shape[-1]:  # detached channels: the same weights, no geometry gradient
        rest = torch.einsum("tpl,tld->tpd", weights.detach(), col[..., n_geo:])
        out = torch.cat([out, rest], dim=-1)  # [t, P, D]
    t_final = torch.exp(csum[..., -1])  # [t, P]
    return out, t_final


def composite_torch(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    opacities: Tensor,  # [I, N]
    colors: Tensor,  # [I, N, D]
    bins: TileBins,
    width: int,
    height: int,
    *,
    max_elems: int = 1 << 22,
    use_checkpoint: bool | None = None,
    n_geo: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Composite front to back per tile -> (render [I, H, W, D], alphas [I, H, W, 1]).
    Channels from ``n_geo`` on get no geometry gradient (``composite``'s contract)."""
    n_img, n, n_ch = colors.shape
    n_geo = n_ch if n_geo is None else n_geo
    ts, tx, ty = bins.tile_size, bins.tiles_x, bins.tiles_y
    n_px = ts * ts
    dev, dt = colors.device, colors.dtype
    xy_f = means2d.reshape(n_img * n, 2)
    con_f = conics.reshape(n_img * n, 3)
    op_f = opacities.reshape(n_img * n)
    col_f = colors.reshape(n_img * n, n_ch)
    if use_checkpoint is None:
        use_checkpoint = torch.is_grad_enabled() and any(
            t.requires_grad for t in (means2d, conics, opacities, colors)
        )

    # pixel centres of every tile: [I * T, P, 2]
    local = torch.arange(ts, device=dev, dtype=dt)
    ly, lx = torch.meshgrid(local, local, indexing="ij")
    tile_ids = torch.arange(bins.n_tiles, device=dev)
    ox = ((tile_ids % tx) * ts).to(dt)
    oy = (torch.div(tile_ids, tx, rounding_mode="floor") * ts).to(dt)
    pix_tile = torch.stack(
        [ox[:, None] + lx.reshape(-1) + 0.5, oy[:, None] + ly.reshape(-1) + 0.5], dim=-1
    )  # [T, P, 2]

    counts = bins.offsets[1:] - bins.offsets[:-1]  # [I * T]
    starts = bins.offsets[:-1]
    done_ids, done_col, done_t = [], [], []
    nonempty = torch.nonzero(counts > 0).flatten()
    if nonempty.numel() > 0:
        lengths = counts[nonempty]
        bucket = torch.ceil(torch.log2(lengths.to(torch.float64))).long()
        for b in torch.unique(bucket).tolist():
            sel = nonempty[bucket == b]
            cap = 1 << int(b)
            per_chunk = max(1, max_elems // (n_px * cap))
            for s in range(0, sel.numel(), per_chunk):
                tiles = sel[s : s + per_chunk]  # [t]
                ar = torch.arange(cap, device=dev)
                valid = ar[None, :] < counts[tiles][:, None]  # [t, L]
                pos = (starts[tiles][:, None] + ar[None, :]).clamp_max(
                    bins.flatten_ids.numel() - 1
                )
                ids = torch.where(valid, bins.flatten_ids[pos], torch.zeros_like(pos))
                args = (pix_tile[tiles % bins.n_tiles], valid)
                args += (xy_f[ids], con_f[ids], op_f[ids], col_f[ids], n_geo)
                if use_checkpoint:
                    out, t_fin = checkpoint(_composite_chunk, *args, use_reentrant=False)
                else:
                    out, t_fin = _composite_chunk(*args)
                done_ids.append(tiles)
                done_col.append(out)
                done_t.append(t_fin)

    render = torch.zeros(n_img * bins.n_tiles, n_px, n_ch, device=dev, dtype=dt)
    trans = torch.ones(n_img * bins.n_tiles, n_px, device=dev, dtype=dt)
    if done_ids:
        idx = torch.cat(done_ids)
        render = render.index_copy(0, idx, torch.cat(done_col))
        trans = trans.index_copy(0, idx, torch.cat(done_t))
    render = render.reshape(n_img, ty, tx, ts, ts, n_ch).permute(0, 1, 3, 2, 4, 5)
    render = render.reshape(n_img, ty * ts, tx * ts, n_ch)[:, :height, :width]
    trans = trans.reshape(n_img, ty, tx, ts, ts).permute(0, 1, 3, 2, 4)
    trans = trans.reshape(n_img, ty * ts, tx * ts)[:, :height, :width]
    return render, (1.0 - trans)[..., None]
