"""Tile binning: which Gaussians touch which 16x16 tile, sorted front to back (gsplat's rules).

A Gaussian with radii (rx, ry) and centre (u, v) covers tiles [floor((u - rx)/ts),
ceil((u + rx)/ts)) x [floor((v - ry)/ts), ceil((v + ry)/ts)), clamped to the grid, exactly like
gsplat's ``isect_tiles``. Inside a tile the list is sorted by depth, ties by Gaussian index
(gsplat's stable radix sort). The result is CSR: ``offsets`` [I * T + 1] into ``flatten_ids``,
where I = images, T = tiles per image, and ``flatten_ids`` index the flattened [I * N] arrays.
``backend="numba"`` counts and fills the lists in a compiled loop (``_numba_projection``);
"torch" is the vectorised twin (argsort over all intersections) it is tested against.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from m3_core.splat.projection import tile_grid


class TileBins(NamedTuple):
    """Intersections of Gaussians with tiles, for I images of N Gaussians."""

    offsets: Tensor  # [I * tiles_y * tiles_x + 1] int64 CSR offsets into flatten_ids
    flatten_ids: Tensor  # [M] int64 index into I * N, per tile front to back
    tiles_per_gauss: Tensor  # [I, N] int32
    tile_size: int
    tiles_x: int
    tiles_y: int

    @property
    def n_tiles(self) -> int:
        return self.tiles_x * self.tiles_y


def tile_ranges(
    means2d: Tensor, radii: Tensor, tile_size: int, tiles_x: int, tiles_y: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per Gaussian tile rectangle [x0, x1) x [y0, y1) (int64, empty when culled).

    means2d [..., 2], radii [..., 2] -> four tensors [...].
    """
    m = means2d.detach().to(torch.float32 if means2d.dtype != torch.float64 else torch.float64)
    r = radii.to(m.dtype)
    ts = float(tile_size)
    x0 = torch.floor((m[..., 0] - r[..., 0]) / ts).clamp(0, tiles_x).long()
    x1 = torch.ceil((m[..., 0] + r[..., 0]) / ts).clamp(0, tiles_x).long()
    y0 = torch.floor((m[..., 1] - r[..., 1]) / ts).clamp(0, tiles_y).long()
    y1 = torch.ceil((m[..., 1] + r[..., 1]) / ts).clamp(0, tiles_y).long()
    culled = (radii[..., 0] <= 0) | (radii[..., 1] <= 0)
    x1 = torch.where(culled, x0, x1)
    y1 = torch.where(culled, y0, y1)
    return x0, x1, y0, y1


@torch.no_grad()
def bin_gaussians(
    means2d: Tensor,  # [I, N, 2]
    radii: Tensor,  # [I, N, 2] int32
    depths: Tensor,  # [I, N]
    width: int,
    height: int,
    tile_size: int = 16,
    backend: str = "torch",
) -> TileBins:
    """Build the per-tile, depth-sorted intersection lists (no grad)."""
    n_img, n = depths.shape
    tiles_x, tiles_y = tile_grid(width, height, tile_size)
    n_tiles = tiles_x * tiles_y
    x0, x1, y0, y1 = tile_ranges(means2d, radii, tile_size, tiles_x, tiles_y)  # [I, N]
    nx, ny = (x1 - x0).clamp_min(0), (y1 - y0).clamp_min(0)
    counts = (nx * ny).reshape(-1)  # [I * N]
    dev = depths.device
    if backend == "numba":
        from m3_core.splat._numba_projection import bin_tiles

        offsets = np.empty(n_img * n_tiles + 1, dtype=np.int64)
        flat = np.empty(int(counts.sum()), dtype=np.int64)
        rects = [t.cpu().numpy() for t in (x0, x1, y0, y1)]
        bin_tiles(*rects, depths.detach().cpu().numpy(), n_tiles, tiles_x, offsets, flat)
        return TileBins(
            offsets=torch.from_numpy(offsets).to(dev),
            flatten_ids=torch.from_numpy(flat).to(dev),
            tiles_per_gauss=counts.reshape(n_img, n).to(torch.int32),
            tile_size=tile_size,
            tiles_x=tiles_x,
            tiles_y=tiles_y,
        )

    # global Gaussian order: by image, then depth (stable: ties by index)
    depth_order = torch.argsort(depths.detach().reshape(n_img, n), dim=1, stable=True)
    order = (depth_order + torch.arange(n_img, device=dev)[:, None] * n).reshape(-1)
    cnt_sorted = counts[order]
    total = int(cnt_sorted.sum())
    gid = torch.repeat_interleave(order, cnt_sorted)  # [M] flat ids, depth-ordered
    starts = torch.cumsum(cnt_sorted, 0) - cnt_sorted
    local = torch.arange(total, device=dev) - torch.repeat_interleave(starts, cnt_sorted)
    nx_g = nx.reshape(-1)[gid]
    tx = x0.reshape(-1)[gid] + local % nx_g.clamp_min(1)
    ty = y0.reshape(-1)[gid] + torch.div(local, nx_g.clamp_min(1), rounding_mode="floor")
    img = torch.div(gid, n, rounding_mode="floor")
    key = img * n_tiles + ty * tiles_x + tx  # [M]
    perm = torch.argsort(key, stable=True)
    flatten_ids = gid[perm]
    per_tile = torch.bincount(key, minlength=n_img * n_tiles)
    offsets = torch.zeros(n_img * n_tiles + 1, dtype=torch.int64, device=dev)
    offsets[1:] = torch.cumsum(per_tile, 0)
    return TileBins(
        offsets=offsets,
        flatten_ids=flatten_ids,
        tiles_per_gauss=counts.reshape(n_img, n).to(torch.int32),
        tile_size=tile_size,
        tiles_x=tiles_x,
        tiles_y=tiles_y,
    )
