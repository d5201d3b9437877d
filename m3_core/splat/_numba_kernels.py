"""Numba CPU kernels for tile-based alpha compositing (forward and backward), gsplat's rules.

Per pixel (centre at +0.5), Gaussians of its tile are visited front to back:
sigma = a/2 dx^2 + b dx dy + c/2 dy^2 with (dx, dy) = mean2d - pixel; skip if sigma < 0;
alpha = min(0.999, opacity exp(-sigma)); skip if alpha < 1/255; stop (exclusive) once
T (1 - alpha) <= 1e-4; colour += c alpha T. No background here.

The backward pass walks back to front from the last contributing Gaussian, rebuilding T by
dividing by (1 - alpha) as gsplat's CUDA backward does. Every tile writes its gradients into its
own per-intersection slots (no atomics); the caller reduces them by Gaussian id.
Channels from ``n_geo`` on are "detached": their gradient reaches only their colours, not the
geometry (means2d, conics, opacities), as if rendered in a second pass with detached geometry.
Arithmetic is done in float64 whatever the input dtype (T is kept in float64 between passes).
``prange`` runs over tiles; each tile copies its Gaussians into contiguous arrays first, and
per pixel row keeps only those whose box (radii) covers the row; a pixel outside a Gaussian's
box is skipped before sigma is computed. Both skips are exact: outside the box
(r >= extend sqrt(cov_ii), extend = sqrt(2 ln(255 opacity)) or less) sigma > ln(255 opacity),
so alpha < 1/255 there anyway.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
SIGMA_MARGIN = 1e-6  # the cheap log-space test only skips what the exact test surely would


@njit(cache=True, inline="always")
def _row_list(g, n, pyc, rows):
    """Tile-local ids (ascending) of the Gaussians whose box covers pixel row ``pyc``."""
    m = 0
    for k in range(n):
        if abs(g[k, 1] - pyc) <= g[k, 8]:
            rows[m] = k
            m += 1
    return m


@njit(cache=True, inline="always")
def _tile_origin(t, n_tiles_img, tiles_x, tile_size):
    """(image index, first row, first column) of flat tile index ``t``."""
    tile = t % n_tiles_img
    return t // n_tiles_img, (tile // tiles_x) * tile_size, (tile % tiles_x) * tile_size


@njit(cache=True, inline="always")
def _offset_sigma(g, k, pxc, pyc):
    """(dx, dy, sigma) of tile Gaussian ``k`` at pixel centre (pxc, pyc); sigma = -1 when the
    pixel is outside its box column or its alpha cannot reach 1/255 (sigma above g[k, 6])."""
    dx = g[k, 0] - pxc
    if abs(dx) > g[k, 7]:
        return dx, 0.0, -1.0
    dy = g[k, 1] - pyc
    sigma = 0.5 * (g[k, 2] * dx * dx + g[k, 4] * dy * dy) + g[k, 3] * dx * dy
    if sigma < 0.0 or sigma > g[k, 6]:
        return dx, dy, -1.0
    return dx, dy, sigma


@njit(cache=True, inline="always")
def _gather_tile(start, end, flatten_ids, means2d, conics, opacities, radii, colors):
    n = end - start
    n_ch = colors.shape[1]
    g = np.empty((n, 9), dtype=np.float64)  # x, y, a, b, c, opacity, log-threshold, rx, ry
    col = np.empty((n, n_ch), dtype=np.float64)
    for k in range(n):
        gi = flatten_ids[start + k]
        g[k, 7] = radii[gi, 0]
        g[k, 8] = radii[gi, 1]
        g[k, 0] = means2d[gi, 0]
        g[k, 1] = means2d[gi, 1]
        g[k, 2] = conics[gi, 0]
        g[k, 3] = conics[gi, 1]
        g[k, 4] = conics[gi, 2]
        op = float(opacities[gi])
        g[k, 5] = op
        g[k, 6] = math.log(255.0 * op) + SIGMA_MARGIN if op > 0.0 else -np.inf
        for d in range(n_ch):
            col[k, d] = colors[gi, d]
    return g, col


@njit(parallel=True, cache=True, nogil=True)
def composite_forward(
    offsets,  # [I * tiles + 1] int64
    flatten_ids,  # [M] int64 into I * N
    means2d,  # [I * N, 2]
    conics,  # [I * N, 3]
    opacities,  # [I * N]
    radii,  # [I * N, 2] int32 box half sizes
    colors,  # [I * N, D]
    width,
    height,
    tile_size,
    tiles_x,
    out_colors,  # [I, H, W, D] (written)
    out_t,  # [I, H, W] float64 final transmittance (written)
    last_ids,  # [I, H, W] int32 local index in the tile list of the last contributor, -1 none
):
    n_tiles_img = tiles_x * ((height + tile_size - 1) // tile_size)
    n_ch = colors.shape[1]
    for t in prange(offsets.shape[0] - 1):
        img, y0, x0 = _tile_origin(t, n_tiles_img, tiles_x, tile_size)
        start = offsets[t]
        n = offsets[t + 1] - start
        g, col = _gather_tile(
            start, offsets[t + 1], flatten_ids, means2d, conics, opacities, radii, colors
        )
        acc = np.zeros(n_ch, dtype=np.float64)
        rows = np.empty(n, dtype=np.int64)
        for py in range(y0, min(y0 + tile_size, height)):
            pyc = py + 0.5
            m = _row_list(g, n, pyc, rows)
            for px in range(x0, min(x0 + tile_size, width)):
                pxc = px + 0.5
                T = 1.0
                last = -1
                acc[:] = 0.0
                for j in range(m):
                    k = rows[j]
                    dx, dy, sigma = _offset_sigma(g, k, pxc, pyc)
                    if sigma < 0.0:
                        continue
                    alpha = min(ALPHA_MAX, g[k, 5] * math.exp(-sigma))
                    if alpha < ALPHA_MIN:
                        continue
                    next_t = T * (1.0 - alpha)
                    if next_t <= T_MIN:
                        break
                    w = alpha * T
                    for d in range(n_ch):
                        acc[d] += col[k, d] * w
                    last = k
                    T = next_t
                for d in range(n_ch):
                    out_colors[img, py, px, d] = acc[d]
                out_t[img, py, px] = T
                last_ids[img, py, px] = last


@njit(parallel=True, cache=True, nogil=True)
def composite_backward(
    offsets,
    flatten_ids,
    means2d,
    conics,
    opacities,
    radii,
    colors,
    width,
    height,
    tile_size,
    tiles_x,
    out_t,  # [I, H, W] float64 from the forward pass
    last_ids,  # [I, H, W] int32 from the forward pass
    v_colors,  # [I, H, W, D] upstream gradient
    v_alphas,  # [I, H, W] upstream gradient
    n_geo,  # channels [0, n_geo) move the geometry; the rest reach only their colours
    s_means2d,  # [M, 2] per-intersection slots (written)
    s_conics,  # [M, 3]
    s_opacities,  # [M]
    s_colors,  # [M, D]
):
    n_tiles_img = tiles_x * ((height + tile_size - 1) // tile_size)
    n_ch = colors.shape[1]
    for t in prange(offsets.shape[0] - 1):
        img, y0, x0 = _tile_origin(t, n_tiles_img, tiles_x, tile_size)
        start = offsets[t]
        n = offsets[t + 1] - start
        if n == 0:
            continue
        g, col = _gather_tile(
            start, offsets[t + 1], flatten_ids, means2d, conics, opacities, radii, colors
        )
        a_xy = np.zeros((n, 2), dtype=np.float64)
        a_con = np.zeros((n, 3), dtype=np.float64)
        a_op = np.zeros(n, dtype=np.float64)
        a_col = np.zeros((n, n_ch), dtype=np.float64)
        buf = np.zeros(n_ch, dtype=np.float64)
        vr = np.zeros(n_ch, dtype=np.float64)
        rows = np.empty(n, dtype=np.int64)
        for py in range(y0, min(y0 + tile_size, height)):
            pyc = py + 0.5
            m = _row_list(g, n, pyc, rows)
            for px in range(x0, min(x0 + tile_size, width)):
                last = last_ids[img, py, px]
                if last < 0:
                    continue
                pxc = px + 0.5
                t_final = out_t[img, py, px]
                T = t_final
                buf[:] = 0.0
                for d in range(n_ch):
                    vr[d] = v_colors[img, py, px, d]
                va = float(v_alphas[img, py, px])
                for j in range(m - 1, -1, -1):
                    k = rows[j]
                    if k > last:
                        continue
                    dx, dy, sigma = _offset_sigma(g, k, pxc, pyc)
                    if sigma < 0.0:
                        continue
                    vis = math.exp(-sigma)
                    raw = g[k, 5] * vis
                    alpha = min(ALPHA_MAX, raw)
                    if alpha < ALPHA_MIN:
                        continue
                    ra = 1.0 / (1.0 - alpha)
                    T *= ra
                    fac = alpha * T
                    v_alpha = 0.0
                    for d in range(n_geo):
                        a_col[k, d] += fac * vr[d]
                        v_alpha += (col[k, d] * T - buf[d] * ra) * vr[d]
                        buf[d] += col[k, d] * fac
                    for d in range(n_geo, n_ch):
                        a_col[k, d] += fac * vr[d]
                    v_alpha += t_final * ra * va
                    if raw <= ALPHA_MAX:
                        v_sigma = -raw * v_alpha
                        a_con[k, 0] += 0.5 * v_sigma * dx * dx
                        a_con[k, 1] += v_sigma * dx * dy
                        a_con[k, 2] += 0.5 * v_sigma * dy * dy
                        a_xy[k, 0] += v_sigma * (g[k, 2] * dx + g[k, 3] * dy)
                        a_xy[k, 1] += v_sigma * (g[k, 3] * dx + g[k, 4] * dy)
                        a_op[k] += vis * v_alpha
        for k in range(n):
            s_means2d[start + k, 0] = a_xy[k, 0]
            s_means2d[start + k, 1] = a_xy[k, 1]
            for j in range(3):
                s_conics[start + k, j] = a_con[k, j]
            s_opacities[start + k] = a_op[k]
            for d in range(n_ch):
                s_colors[start + k, d] = a_col[k, d]
