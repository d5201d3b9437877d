"""Losses of M3 training: photometric L1 + SSIM, and the point-sampled feature loss.

Feature loss (M3): at ``n`` random normalised pixel locations per model per image, sample the
full-resolution rendered query map and the low-resolution ground-truth feature grid bilinearly
at the SAME coordinates, decode the query samples with GMA, and take mean(1 - cos) + MSE over
the samples whose ground truth is not all zero.

Fast paths and their slow twins (``fast=False``; tests compare them): SSIM through the separable
1-D Gaussian as two banded matrix products instead of torchmetrics' 11x11 convolution (the
same numbers), and bilinear
sampling through ``F.grid_sample`` instead of ``m3_core.data.sample_bilinear``'s row gathers,
and the feature distance from row reductions instead of masked copies.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

SSIM_SIZE, SSIM_SIGMA = 11, 1.5  # torchmetrics' defaults: 11 taps, sigma 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # (k data_range)^2 with data_range 1


def ssim_reference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of two images [H, W, 3] in [0, 1] by torchmetrics (11x11 Gaussian window, sigma 1.5,
    reflect padding): the slow twin of :func:`ssim`."""
    p = pred.permute(2, 0, 1)[None]  # [1, 3, H, W]
    t = target.permute(2, 0, 1)[None]
    return structural_similarity_index_measure(p, t, data_range=1.0)


@functools.lru_cache(maxsize=16)
def _band(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[n + 10, n] banded matrix: x_padded @ band = the 11-tap Gaussian filter along x."""
    x = torch.arange(SSIM_SIZE, dtype=torch.float64) - (SSIM_SIZE - 1) / 2
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    g = g / g.sum()  # [11], torchmetrics' normalised 1-D Gaussian
    band = torch.zeros(n + SSIM_SIZE - 1, n, dtype=torch.float64)
    cols = torch.arange(n)
    for k in range(SSIM_SIZE):
        band[cols + k, cols] = g[k]
    return band.to(dtype=dtype, device=device)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of two images [H, W, 3] in [0, 1]: torchmetrics' definition (see
    :func:`ssim_reference`), the separable window applied as two banded matrix products
    (on CPU much faster than a convolution of single-channel maps, also backward)."""
    pad = SSIM_SIZE // 2
    h, w = pred.shape[:2]
    p = F.pad(pred.permute(2, 0, 1)[None], (pad,) * 4, mode="reflect")[0]  # [3, H+10, W+10]
    t = F.pad(target.permute(2, 0, 1)[None], (pad,) * 4, mode="reflect")[0]
    maps = torch.cat([p, t, p * p, t * t, p * t])  # [15, H+10, W+10]
    x = maps @ _band(w, pred.dtype, pred.device)  # [15, H+10, W]
    x = _band(h, pred.dtype, pred.device).T @ x  # [15, H, W]
    mu_p, mu_t, e_pp, e_tt, e_pt = x.reshape(5, 3, h, w)
    mu_pp, mu_tt, mu_pt = mu_p * mu_p, mu_t * mu_t, mu_p * mu_t
    var_p = torch.clamp(e_pp - mu_pp, min=0.0)
    var_t = torch.clamp(e_tt - mu_tt, min=0.0)
    cov = e_pt - mu_pt
    num = (2 * mu_pt + SSIM_C1) * (2 * cov + SSIM_C2)
    return (num / ((mu_pp + mu_tt + SSIM_C1) * (var_p + var_t + SSIM_C2))).mean()


def photometric_loss(
    pred: torch.Tensor, target: torch.Tensor, ssim_lambda: float = 0.2, *, fast: bool = True
) -> torch.Tensor:
    """(1 - lambda) L1 + lambda (1 - SSIM) on images [H, W, 3]."""
    l1 = (pred - target).abs().mean()
    if ssim_lambda == 0:
        return l1
    s = ssim(pred, target) if fast else ssim_reference(pred, target)
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - s)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(pred.detach().clamp(0, 1), target).item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def feature_distance(
    pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean(1 - cos), per-element MSE) over rows [P, D] whose target is not all zero: the
    slow twin of :func:`feature_distance_fused` (masked copies, ``F.cosine_similarity``)."""
    valid = target.abs().amax(dim=-1) > 0  # [P]
    if not bool(valid.any()):
        zero = pred.sum() * 0.0
        return zero, zero
    p, t = pred[valid], target[valid]
    cos = F.cosine_similarity(p, t, dim=-1, eps=1e-8)
    return (1.0 - cos).mean(), F.mse_loss(p, t)


class _FusedDistance(torch.autograd.Function):
    """Row sums (1 - cos) and |p - t|^2 over valid rows [P, D] -> (cos sum, sq sum); the
    gradient with respect to ``pred`` only, written in one pass (alpha t + beta p per row)."""

    EPS = 1e-8  # F.cosine_similarity's floor on each norm (applied before the square root)

    @staticmethod
    def forward(ctx, pred, target, tt, valid):  # [P, D], [P, D] and [P] |t|^2 (constant), [P]
        buf = torch.empty_like(pred)  # one [P, D] scratch for the row sums
        pt = torch.mul(pred, target, out=buf).sum(-1)  # [P]
        pp = torch.mul(pred, pred, out=buf).sum(-1)
        e2 = _FusedDistance.EPS**2
        pn, tn = pp.clamp_min(e2).sqrt(), tt.clamp_min(e2).sqrt()
        cos = pt / (pn * tn)
        sq = (pp + tt - 2.0 * pt).clamp_min(0.0)
        ctx.save_for_backward(pred, target, valid, pt, pp, pn, tn)
        return ((1.0 - cos) * valid).sum(), (sq * valid).sum()

    @staticmethod
    def backward(ctx, g_cos, g_sq):
        pred, target, valid, pt, pp, pn, tn = ctx.saved_tensors
        e2 = _FusedDistance.EPS**2
        # d(1 - cos)/dp = -t / (|p| |t|) + pt p / (|p|^3 |t|)  (|p| clamped: no p term then)
        a = -g_cos * valid / (pn * tn)  # [P] coefficient of t
        b = g_cos * valid * pt * (pp > e2) / (pn**3 * tn)  # [P] coefficient of p
        a = a - 2.0 * g_sq * valid  # d|p - t|^2/dp = 2 p - 2 t
        b = b + 2.0 * g_sq * valid
        grad = pred * b[:, None]
        grad.addcmul_(target, a[:, None])
        return grad, None, None, None


def feature_distance_fused(
    pred: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`feature_distance` from three row reductions: p.t, |p|^2 and |t|^2 give both
    the cosine and the squared distance |p|^2 + |t|^2 - 2 p.t; all-zero target rows are
    weighted 0 instead of copied out, and the gradient is one pass. At P = 2000, D = 1280
    (the demo's training) it replaces about a dozen full [P, D] passes by five."""
    t = target.detach().to(pred.dtype)
    tt = (t * t).sum(-1)  # [P]
    valid = (tt > 0).to(pred.dtype)  # a row with data has |t|^2 > 0 (features are >> 1e-19)
    n = valid.sum()
    if not bool(n > 0):
        zero = pred.sum() * 0.0
        return zero, zero
    cos_sum, sq_sum = _FusedDistance.apply(pred, t, tt, valid)
    return cos_sum / n, sq_sum / (n * pred.shape[-1])


def sample_uv(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """``n`` uniform random normalised image coordinates [n, 2] in [0, 1) (u along width)."""
    return torch.rand(n, 2, generator=generator).to(device)


def sample_grid(grid: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [P, D] of grid [h, w, D] at normalised uv [P, 2] (u along the width):
    ``sample_bilinear``'s convention (texel centres, border clamp) through ``F.grid_sample``
    (float32 for half-precision grids). Differentiable in the grid."""
    g = grid.float() if grid.dtype in (torch.float16, torch.bfloat16) else grid
    xy = (2.0 * uv - 1.0).to(g.dtype).reshape(1, 1, -1, 2)  # [1, 1, P, 2]
    out = F.grid_sample(
        g.permute(2, 0, 1)[None], xy, mode="bilinear", padding_mode="border", align_corners=False
    )  # [1, D, 1, P]
    return out[0, :, 0].T


def feature_loss(
    query_map: torch.Tensor,  # [H, W, s_m] this model's slice of the rendered queries
    gt_grid: torch.Tensor,  # [h, w, d_m] ground-truth features
    decode,  # callable [P, s_m] -> [P, d_m] (GMA)
    uv: torch.Tensor,  # [P, 2] normalised coordinates
    *,
    fast: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """M3's point-sampled feature loss for one model and one image: (1 - cos) + MSE."""
    if fast:
        q = sample_grid(query_map, uv)  # [P, s_m]
        gt = sample_grid(gt_grid.to(query_map.device), uv).float()  # [P, d_m]
    else:
        from m3_core.data.features import sample_bilinear

        q = sample_bilinear(query_map, uv)
        gt = sample_bilinear(gt_grid.to(query_map.device, torch.float32), uv)
    pred = decode(q)  # [P, d_m]
    cos_d, mse = (feature_distance_fused if fast else feature_distance)(pred, gt)
    return cos_d + mse, {"cos": float(cos_d.detach()), "mse": float(mse.detach())}
