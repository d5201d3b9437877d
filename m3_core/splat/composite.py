"""Compositing of projected Gaussians into images: one entry point, three CPU backends.

- "numba": compiled tile kernels (``_numba_kernels``) behind a ``torch.autograd.Function``;
  the fast CPU path. First call JIT-compiles (a few s per dtype), cached on disk afterwards.
- "torch": the pure-torch tile twin (``_torch_impl``), plain autograd.
- "dense": the float64 brute-force reference (``_dense``), plain autograd, slow.
All follow gsplat's rules and add no background. ``n_geo`` (default: every channel) splits the
channels: those from ``n_geo`` on are rendered with the same weights but their gradient reaches
only their colours, never the geometry (means2d, conics, opacities): one pass that gives what
a second pass with detached geometry would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from m3_core.splat.tiles import TileBins

BACKENDS = ("numba", "torch", "dense")


def _np(t: Tensor, dtype: type = np.float64) -> np.ndarray:
    """Contiguous numpy copy in ``dtype`` (no copy when it already is)."""
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)


def _big_dtype(t: Tensor) -> type:
    """Per-pixel / per-channel arrays stay float32 for float32 input (memory); else float64.

    Per-Gaussian geometry is always passed as float64 and all arithmetic is float64.
    """
    return np.float32 if t.dtype == torch.float32 else np.float64


class _NumbaComposite(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        means2d: Tensor,  # [I, N, 2]
        conics: Tensor,  # [I, N, 3]
        opacities: Tensor,  # [I, N]
        colors: Tensor,  # [I, N, D]
        radii: Tensor,  # [I, N, 2] int32
        bins: TileBins,
        width: int,
        height: int,
        n_geo: int,
    ) -> tuple[Tensor, Tensor]:
        from m3_core.splat import _numba_kernels as nk

        n_img, n, n_ch = colors.shape
        arrays = (
            _np(bins.offsets, np.int64),
            _np(bins.flatten_ids, np.int64),
            _np(means2d.reshape(n_img * n, 2)),
            _np(conics.reshape(n_img * n, 3)),
            _np(opacities.reshape(n_img * n)),
            _np(radii.reshape(n_img * n, 2), np.int32),
            _np(colors.reshape(n_img * n, n_ch), _big_dtype(colors)),
            width,
            height,
            bins.tile_size,
            bins.tiles_x,
        )
        out = np.zeros((n_img, height, width, n_ch), dtype=_big_dtype(colors))
        out_t = np.ones((n_img, height, width), dtype=np.float64)
        last = np.full((n_img, height, width), -1, dtype=np.int32)
        nk.composite_forward(*arrays, out, out_t, last)
        ctx.arrays = arrays
        ctx.out_t, ctx.last = out_t, last
        ctx.shapes = (n_img, n, n_ch, colors.dtype, colors.device)
        ctx.n_geo = n_geo
        render = torch.from_numpy(out).to(dtype=colors.dtype, device=colors.device)
        alphas = torch.from_numpy(1.0 - out_t).to(dtype=colors.dtype, device=colors.device)
        return render, alphas[..., None]

    @staticmethod
    def backward(ctx: Any, v_render: Tensor | None, v_alphas: Tensor | None):  # noqa: ANN205
        from m3_core.splat import _numba_kernels as nk

        n_img, n, n_ch, dtype, device = ctx.shapes
        arrays = ctx.arrays
        m = arrays[1].shape[0]
        shape = (n_img, ctx.last.shape[1], ctx.last.shape[2])
        big = arrays[6].dtype  # colors' numpy dtype
        vr = _np(v_render, big) if v_render is not None else np.zeros(shape + (n_ch,), big)
        va = _np(v_alphas[..., 0]) if v_alphas is not None else np.zeros(shape)
        s_xy = np.empty((m, 2))  # every slot is written: no zeroing
        s_con = np.empty((m, 3))
        s_op = np.empty(m)
        s_col = np.empty((m, n_ch), dtype=big)
        nk.composite_backward(
            *arrays, ctx.out_t, ctx.last, vr, va, ctx.n_geo, s_xy, s_con, s_op, s_col
        )
        ids = torch.from_numpy(arrays[1]).to(device)

        def reduce(slots: np.ndarray, tail: tuple[int, ...]) -> Tensor:
            src = torch.from_numpy(slots).to(device).reshape((m,) + tail)
            acc = torch.zeros((n_img * n,) + tail, dtype=src.dtype, device=device)
            acc.index_add_(0, ids, src)
            return acc.reshape((n_img, n) + tail).to(dtype)

        return (
            reduce(s_xy, (2,)),
            reduce(s_con, (3,)),
            reduce(s_op, ()),
            reduce(s_col, (n_ch,)),
            None,
            None,
            None,
            None,
            None,
        )


def composite(
    means2d: Tensor,  # [I, N, 2]
    conics: Tensor,  # [I, N, 3]
    opacities: Tensor,  # [I, N]
    colors: Tensor,  # [I, N, D]
    bins: TileBins,
    radii: Tensor,  # [I, N, 2] int32
    depths: Tensor,  # [I, N] (dense backend only)
    width: int,
    height: int,
    backend: str = "numba",
    n_geo: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Alpha-composite front to back -> (render [I, H, W, D], alphas [I, H, W, 1])."""
    n_ch = colors.shape[-1]
    n_geo = n_ch if n_geo is None else int(n_geo)
    if not 0 <= n_geo <= n_ch:
        raise ValueError(f"n_geo must be in 0..{n_ch}, got {n_geo}")
    if backend == "numba":
        return _NumbaComposite.apply(
            means2d, conics, opacities, colors, radii, bins, width, height, n_geo
        )
    if backend == "torch":
        from m3_core.splat._torch_impl import composite_torch

        return composite_torch(
            means2d, conics, opacities, colors, bins, width, height, n_geo=n_geo
        )
    if backend == "dense":
        from m3_core.splat._dense import composite_dense

        return composite_dense(
            means2d, conics, opacities, colors, radii, depths, width, height, bins.tile_size,
            n_geo=n_geo,
        )  # fmt: skip
    raise ValueError(f"unknown compositing backend {backend!r}; expected one of {BACKENDS}")
