"""Training-free lifting: 2D feature maps onto Gaussians, one rasterizer fwd + bwd per view.

Each Gaussian i receives, per keyframe, the sums over the pixels p it contributes to, weighted
by its contribution ``w_i(p) = alpha_i(p) T_i(p)`` (visibility-weighted lifting, as in Occam's
LGS / VALA, and the technique of :mod:`m3_core.memory.grounding`)::

    S_m[i]  = sum_p w_i(p) F_m(p)        [d_m]  feature sums of model m
    V_m[i]  = sum_p w_i(p) valid_m(p)           the mass those sums carry
    vis[i]  = sum_p w_i(p)                      pixel mass (visibility)

``F_m(p)`` is the feature grid upsampled bilinearly to the lifting resolution (texel centres
as :func:`m3_core.data.features.sample_bilinear`, border clamped) and ``valid_m`` the
upsampled indicator of non-zero cells, so cells without a feature neither pull the average
towards 0 nor count as mass. The lifted feature is ``S_m / V_m``. All three come from one
backward pass: render colours ``c_i`` (zeros) for the channels ``[F_1, valid_1, ..., 1]`` and
back-propagate ``dL/dC(p) = [F_1(p), valid_1(p), ..., 1]``; the gradient on ``c_i`` is the
wanted sums. :func:`lift_dense` is the slow twin (explicit weights, float64, dense compositor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from m3_core.types import Camera


def seed_maps(
    features: Mapping[str, torch.Tensor], names: Sequence[str], width: int, height: int
) -> torch.Tensor:
    """Per-pixel backward seed [H, W, sum_m (d_m + 1) + 1] at ``width`` x ``height``: for each
    model in ``names`` its upsampled features and validity, then a channel of ones."""
    parts = []
    for name in names:
        grid = features[name].float()  # [h, w, d]
        valid = (grid != 0).any(dim=-1, keepdim=True).float()  # [h, w, 1]
        both = torch.cat([grid, valid], dim=-1).permute(2, 0, 1)[None]  # [1, d + 1, h, w]
        up = F.interpolate(both, size=(height, width), mode="bilinear", align_corners=False)
        parts.append(up[0].permute(1, 2, 0))  # [H, W, d + 1]
    parts.append(torch.ones(height, width, 1))
    return torch.cat(parts, dim=-1)


def split_sums(
    grad: torch.Tensor, dims: Sequence[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """[N, sum (d_m + 1) + 1] -> ([S_m [N, d_m]], [V_m [N]], vis [N])."""
    sums, masses, a = [], [], 0
    for d in dims:
        sums.append(grad[:, a : a + d])
        masses.append(grad[:, a + d])
        a += d + 1
    return sums, masses, grad[:, a]


def _geometry(gaussians, dtype=torch.float32):
    return (
        gaussians["means"].detach().to(dtype),
        gaussians["quats"].detach().to(dtype),
        torch.exp(gaussians["scales"].detach()).to(dtype),
        torch.sigmoid(gaussians["opacities"].detach()).to(dtype),
    )


def lift(
    gaussians, camera: Camera, seed: torch.Tensor, *, backend: str = "auto"
) -> torch.Tensor:  # [N, C]
    """``sum_p w_i(p) seed(p)`` for every Gaussian: one rasterize fwd + bwd at ``camera``
    (whose size must match ``seed`` [H, W, C])."""
    from m3_core.splat import rasterize

    means, quats, scales, opac = _geometry(gaussians)
    n, c = means.shape[0], seed.shape[-1]
    cam = camera.to(means.device)
    with torch.enable_grad():
        colors = means.new_zeros(n, c).requires_grad_(True)  # [N, C]
        out, _, _ = rasterize(
            means, quats, scales, opac, colors, cam.viewmat.to(means)[None],
            cam.K.to(means)[None], cam.width, cam.height, render_mode="RGB", backend=backend,
            check_values=False,
        )  # fmt: skip  # [1, H, W, C]
        out.backward(seed.to(out)[None])
    return colors.grad


def lift_dense(gaussians, camera: Camera, seed: torch.Tensor) -> torch.Tensor:  # [N, C]
    """Slow twin of :func:`lift` for tiny sets: the weights ``w_i(p)`` rendered explicitly
    (a one-hot colour per Gaussian, dense float64 compositor), then ``W^T seed``."""
    from m3_core.splat import rasterize

    means, quats, scales, opac = _geometry(gaussians, torch.float64)
    n = means.shape[0]
    out, _, _ = rasterize(
        means, quats, scales, opac, torch.eye(n, dtype=torch.float64),
        camera.viewmat.double()[None], camera.K.double()[None], camera.width, camera.height,
        render_mode="RGB", backend="dense",
    )  # fmt: skip
    w = out[0].reshape(-1, n)  # [H*W, N] = alpha_i T_i per pixel
    return (w.T @ seed.reshape(-1, seed.shape[-1]).double()).float()
