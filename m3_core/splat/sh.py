"""Real spherical harmonics up to degree 3, in gsplat's convention (pure torch).

Basis order and constants are those of gsplat (Sloan, "Efficient Spherical Harmonic
Evaluation", JCGT 2013): coefficient k of a Gaussian multiplies basis k evaluated at the unit
direction from the camera centre to the Gaussian mean. ``eval_sh`` returns the raw sum; the
rasterizer adds 0.5 and clamps at 0 afterwards, exactly like ``gsplat.rasterization`` does when
``sh_degree`` is given. ``rgb_to_sh`` / ``sh_to_rgb`` convert a DC coefficient to a colour.
"""

from __future__ import annotations

import torch
from torch import Tensor

from m3_core.errors import InvalidInputError

SH_C0 = 0.28209479177387814


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients for ``degree``: (degree + 1) ** 2."""
    return (degree + 1) ** 2


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """Colour in [0, 1] -> DC coefficient (so that eval_sh(0, ...) + 0.5 gives rgb back)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh: Tensor) -> Tensor:
    """DC coefficient -> colour (inverse of ``rgb_to_sh``)."""
    return sh * SH_C0 + 0.5


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """SH basis values for unit ``dirs`` [..., 3] -> [..., (degree + 1) ** 2]."""
    if not 0 <= degree <= 3:
        raise InvalidInputError(f"sh degree must be in 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        a = 0.48860251190292
        out += [-a * y, a * z, -a * x]
    if degree >= 2:
        z2 = z * z
        b = -1.092548430592079 * z
        a = 0.5462742152960395
        c1 = x * x - y * y
        s1 = 2 * x * y
        out += [a * s1, b * y, 0.9461746957575601 * z2 - 0.3153915652525201, b * x, a * c1]
        if degree >= 3:
            c = -2.285228997322329 * z2 + 0.4570457994644658
            b = 1.445305721320277 * z
            a = -0.5900435899266435
            c2 = x * c1 - y * s1
            s2 = x * s1 + y * c1
            out += [
                a * s2,
                b * s1,
                c * y,
                z * (1.865881662950577 * z2 - 1.119528997770346),
                c * x,
                b * c1,
                a * c2,
            ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Evaluate SH of ``degree`` with ``coeffs`` [..., K, 3] at ``dirs`` [..., 3] -> [..., 3].

    ``dirs`` need not be normalised (zero vectors give the DC term only). Only the first
    (degree + 1) ** 2 of the K coefficients are used, as in gsplat.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-1] != 3 or coeffs.shape[-2] < k:
        raise InvalidInputError(
            f"sh coefficients must be [..., K>={k}, 3] for degree {degree}, "
            f"got {tuple(coeffs.shape)}"
        )
    dirs = torch.nn.functional.normalize(dirs, p=2, dim=-1)
    bases = sh_bases(degree, dirs)  # [..., k]
    return (bases[..., None] * coeffs[..., :k, :]).sum(dim=-2)
