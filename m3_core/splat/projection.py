"""EWA projection of 3D Gaussians to screen space, differentiable torch (gsplat's rules).

Conventions (same as gsplat 1.5.3's fused CUDA projection):
- ``viewmats`` [C, 4, 4] are world-to-camera in the OpenCV optical frame (x right, y down,
  z forward); ``Ks`` [C, 3, 3] pinhole intrinsics; pixel (u, v) = (fx x/z + cx, fy y/z + cy).
- 3D covariance R(q) diag(s)^2 R(q)^T with q = wxyz (normalised here); the Jacobian of the
  perspective map uses x/z, y/z clamped to 1.3x the field of view.
- ``eps2d`` is added to the 2D covariance diagonal (no compensation: "classic" mode).
- Culled (radii == 0): depth outside [near_plane, far_plane], det <= 0, opacity < 1/255,
  both radii <= radius_clip, or the bounding box outside the image.
- Radius per axis = ceil(extend * sqrt(cov2d_ii)), extend = min(3.33, sqrt(2 ln(255 opacity)))
  (gsplat's opacity-aware bound; 3.33 when ``opacities`` is None).
- Culled entries have zero means2d / depths / conics (and zero gradient), like gsplat.

``backend="numba"`` runs the same rules in a compiled kernel with a hand-written backward
(``_numba_projection``; float64 arithmetic, no gradient to viewmats / Ks); "torch" is the
differentiable twin it is tested against, and the one used when viewmats or Ks need a gradient.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0


class Projection(NamedTuple):
    """Screen-space Gaussians for C cameras."""

    means2d: Tensor  # [C, N, 2] pixel coordinates (differentiable)
    depths: Tensor  # [C, N] camera-space z (differentiable)
    conics: (
        Tensor  # [C, N, 3] inverse 2D covariance (a, b, c): sigma = a/2 dx^2 + b dx dy + c/2 dy^2
    )
    radii: Tensor  # [C, N, 2] int32 bounding-box half sizes in pixels, 0 = culled


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Unnormalised wxyz quaternions [..., 4] -> rotation matrices [..., 3, 3]."""
    w, x, y, z = torch.nn.functional.normalize(quats, p=2, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariance R diag(scales^2) R^T [N, 3, 3] from quats [N, 4] and scales [N, 3]."""
    m = quat_to_rotmat(quats) * scales[..., None, :]  # [N, 3, 3] = R S
    return m @ m.transpose(-1, -2)


class _NumbaProjection(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        means: Tensor,  # [N, 3]
        quats: Tensor,  # [N, 4]
        scales: Tensor,  # [N, 3]
        opacities: Tensor | None,  # [N]
        viewmats: Tensor,  # [C, 4, 4]
        Ks: Tensor,  # [C, 3, 3]
        args: tuple,  # (width, height, near_plane, far_plane, eps2d, radius_clip)
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from m3_core.splat import _numba_projection as npj

        width, height, near, far, eps2d, radius_clip = args
        c, n = viewmats.shape[0], means.shape[0]
        arr = [_f64(t) for t in (means, quats, scales)]
        op = _f64(opacities) if opacities is not None else np.zeros(0)
        cams = (_f64(viewmats), _f64(Ks))
        xy, depth = np.empty((c, n, 2)), np.empty((c, n))
        conic, radii = np.empty((c, n, 3)), np.empty((c, n, 2), dtype=np.int32)
        npj.project_forward(
            *arr, op, opacities is not None, *cams, width, height, near, far, eps2d,
            radius_clip, xy, depth, conic, radii,
        )  # fmt: skip
        ctx.arrays = (*arr, *cams, width, height, eps2d, radii)
        ctx.like = means
        ctx.mark_non_differentiable(radii_t := torch.from_numpy(radii).to(means.device))
        return (*(_back(a, means) for a in (xy, depth, conic)), radii_t)

    @staticmethod
    def backward(ctx: Any, v_xy: Tensor, v_depth: Tensor, v_conic: Tensor, _v_radii: Any):  # noqa: ANN205
        from m3_core.splat import _numba_projection as npj

        means, quats, scales = ctx.arrays[:3]
        n = means.shape[0]
        grads = np.empty((n, 3)), np.empty((n, 4)), np.empty((n, 3))
        npj.project_backward(*ctx.arrays, _f64(v_xy), _f64(v_depth), _f64(v_conic), *grads)
        g_m, g_q, g_s = (_back(g, ctx.like) for g in grads)
        return g_m, g_q, g_s, None, None, None, None


def _f64(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)


def _back(a: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(a).to(dtype=like.dtype, device=like.device)


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3] (activated)
    opacities: Tensor | None,  # [N] (activated) or None
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    backend: str = "torch",
) -> Projection:
    """Project Gaussians into every camera (see module docstring for the exact rules)."""
    if backend == "numba" and not (viewmats.requires_grad or Ks.requires_grad):
        args = (int(width), int(height), float(near_plane), float(far_plane), float(eps2d),
                float(radius_clip))  # fmt: skip
        return Projection(*_NumbaProjection.apply(means, quats, scales, opacities, viewmats,
                                                  Ks, args))  # fmt: skip
    if backend not in ("torch", "numba"):
        raise ValueError(f"unknown projection backend {backend!r}; expected 'torch' or 'numba'")
    rot = viewmats[:, None, :3, :3]  # [C, 1, 3, 3]
    trans = viewmats[:, None, :3, 3]  # [C, 1, 3]
    mean_c = (rot @ means[None, :, :, None])[..., 0] + trans  # [C, N, 3]
    cov_c = rot @ covariance_3d(quats, scales)[None] @ rot.transpose(-1, -2)  # [C, N, 3, 3]

    x, y, z = mean_c.unbind(-1)  # [C, N]
    in_depth = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))  # no inf/NaN in culled branches
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    tx = z_safe * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x / z_safe))
    ty = z_safe * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y / z_safe))
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [fx / z_safe, zero, -fx * tx / z_safe**2, zero, fy / z_safe, -fy * ty / z_safe**2],
        dim=-1,
    ).reshape(z.shape + (2, 3))  # [C, N, 2, 3]
    cov2d = jac @ cov_c @ jac.transpose(-1, -2)  # [C, N, 2, 2]
    u = fx * x / z_safe + cx  # [C, N]
    v = fy * y / z_safe + cy

    ca = cov2d[..., 0, 0] + eps2d
    cb = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    cc = cov2d[..., 1, 1] + eps2d
    det = ca * cc - cb * cb
    valid = in_depth & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([cc / det_safe, -cb / det_safe, ca / det_safe], dim=-1)  # [C, N, 3]

    with torch.no_grad():
        extend = torch.full_like(z, 3.33)
        if opacities is not None:
            op = opacities.detach()[None, :].expand_as(z)
            valid = valid & (op >= ALPHA_THRESHOLD)
            bound = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
            extend = torch.minimum(extend, bound)
        rx = torch.ceil(extend * torch.sqrt(ca.detach().clamp_min(0)))
        ry = torch.ceil(extend * torch.sqrt(cc.detach().clamp_min(0)))
        valid &= ~((rx <= radius_clip) & (ry <= radius_clip))
        ud, vd = u.detach(), v.detach()
        valid &= ~((ud + rx <= 0) | (ud - rx >= width) | (vd + ry <= 0) | (vd - ry >= height))
        valid &= torch.isfinite(rx) & torch.isfinite(ry)
        radii = torch.stack([rx, ry], dim=-1).where(valid[..., None], 0).to(torch.int32)

    vmask = valid[..., None]
    means2d = torch.stack([u, v], dim=-1).where(vmask, 0.0)  # [C, N, 2]
    conics = conics.where(vmask, 0.0)
    depths = z.where(valid, 0.0)  # [C, N]
    return Projection(means2d, depths, conics, radii)


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """(tile_width, tile_height): number of tiles across and down."""
    return math.ceil(width / tile_size), math.ceil(height / tile_size)
