"""Losses of M3 training: photometric L1 + SSIM, and the point-sampled feature loss.

Feature loss (M3): at ``n`` random normalised pixel locations per model per image, sample the
full-resolution rendered query map and the low-resolution ground-truth feature grid bilinearly
at the SAME coordinates, decode the query samples with GMA, and take mean(1 - cos) + MSE over
the samples whose ground truth is not all zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of two images [H, W, 3] in [0, 1] (11x11 Gaussian window, sigma 1.5)."""
    p = pred.permute(2, 0, 1)[None]  # [1, 3, H, W]
    t = target.permute(2, 0, 1)[None]
    return structural_similarity_index_measure(p, t, data_range=1.0)


def photometric_loss(
    pred: torch.Tensor, target: torch.Tensor, ssim_lambda: float = 0.2
) -> torch.Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM) on images [H, W, 3]."""
    l1 = (pred - target).abs().mean()
    if ssim_lambda == 0:
        return l1
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - ssim(pred, target))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(pred.detach().clamp(0, 1), target).item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def feature_distance(
    pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean(1 - cos), per-element MSE) over rows [P, D] whose target is not all zero."""
    valid = target.abs().amax(dim=-1) > 0  # [P]
    if not bool(valid.any()):
        zero = pred.sum() * 0.0
        return zero, zero
    p, t = pred[valid], target[valid]
    cos = F.cosine_similarity(p, t, dim=-1, eps=1e-8)
    return (1.0 - cos).mean(), F.mse_loss(p, t)


def sample_uv(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` uniform random normalised image coordinates [n, 2] in [0, 1) (u along width)."""
    return torch.rand(n, 2, generator=generator).to(device)


def feature_loss(
    query_map: torch.Tensor,  # [H, W, s_m] this model's slice of the rendered queries
    gt_grid: torch.Tensor,  # [h, w, d_m] ground-truth features
    decode,  # callable [P, s_m] -> [P, d_m] (GMA)
    uv: torch.Tensor,  # [P, 2] normalised coordinates
) -> tuple[torch.Tensor, dict[str, float]]:
    """M3's point-sampled feature loss for one model and one image: (1 - cos) + MSE."""
    from m3_core.data.features import sample_bilinear

    q = sample_bilinear(query_map, uv)  # [P, s_m]
    gt = sample_bilinear(gt_grid.to(query_map.device, torch.float32), uv)  # [P, d_m]
    pred = decode(q)  # [P, d_m]
    cos_d, mse = feature_distance(pred, gt)
    return cos_d + mse, {"cos": float(cos_d.detach()), "mse": float(mse.detach())}
