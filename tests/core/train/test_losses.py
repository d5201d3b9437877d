import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from m3_core.memory.gma import gma_decode
from m3_core.train.losses import (
    feature_distance,
    feature_distance_fused,
    feature_loss,
    photometric_loss,
    psnr,
    ssim,
)


def test_ssim_matches_skimage():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(40, 50, 3, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(40, 50, 3, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = structural_similarity(
        a.numpy(), b.numpy(), channel_axis=2, data_range=1.0, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False,
    )  # fmt: skip
    # skimage crops the 5-pixel border; torchmetrics keeps it (reflect padding): ~1e-2 apart
    assert float(ssim(a, b)) == pytest.approx(ref, abs=2e-2)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)


def test_photometric_loss_terms():
    a = torch.zeros(8, 8, 3)
    b = torch.full((8, 8, 3), 0.5)
    assert float(photometric_loss(a, b, ssim_lambda=0.0)) == pytest.approx(0.5)
    full = photometric_loss(a, b, ssim_lambda=0.2)
    assert float(full) == pytest.approx(0.8 * 0.5 + 0.2 * (1 - float(ssim(a, b))), rel=1e-6)
    assert psnr(a, b) == pytest.approx(-10 * np.log10(0.25))


def test_feature_distance_masks_all_zero_targets():
    pred = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    tgt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    cos_d, mse = feature_distance(pred, tgt)
    assert float(cos_d) == pytest.approx(0.5)  # rows 0 (cos 1) and 1 (cos 0); row 2 masked
    assert float(mse) == pytest.approx(((0 - 1) ** 2 + 1**2) / 4)
    zero = feature_distance(pred, torch.zeros_like(pred))[0]
    assert float(zero) == 0.0


def test_feature_loss_is_sampled_at_the_same_coordinates():
    """A rendered query map equal (through GMA) to the GT grid gives ~zero loss; the gradient
    reaches the query map and the projection only where used."""
    torch.manual_seed(0)
    bank = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1) * 3  # [t, d]
    proj = torch.eye(6)[:, :6]  # s = d = 6: z = q
    labels = torch.tensor([[0, 1], [2, 3]])  # 2x2 GT grid of bank rows
    gt = bank[labels]  # [2, 2, 6]
    qmap = bank[labels].repeat_interleave(8, 0).repeat_interleave(8, 1).clone()  # [16, 16, 6]
    qmap.requires_grad_(True)
    uv = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])  # cell centres
    loss, parts = feature_loss(qmap, gt, lambda q: gma_decode(q, proj, bank, 0.01), uv)
    assert parts["cos"] < 1e-4 and parts["mse"] < 1e-3
    loss.backward()
    assert qmap.grad is not None and torch.isfinite(qmap.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_feature_distance_matches_its_slow_twin_forward_and_backward(dtype):
    """At a real size (2000 samples x 1280 channels, some targets all zero, some predictions
    equal to their target) both terms and their gradient agree with the masked reference."""
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2000, 1280, generator=g, dtype=dtype)
    tgt = torch.randn(2000, 1280, generator=g, dtype=dtype).abs()
    tgt[::7] = 0.0  # no data
    pred[1::11] = tgt[1::11]  # exact matches: cos 1, distance 0
    tol = {"rtol": 2e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 0}
    grads = []
    for fn in (feature_distance, feature_distance_fused):
        p = pred.clone().requires_grad_(True)
        cos_d, mse = fn(p, tgt)
        (cos_d + 0.5 * mse).backward()
        grads.append((cos_d.detach(), mse.detach(), p.grad))
    (c0, m0, g0), (c1, m1, g1) = grads
    torch.testing.assert_close(c1, c0, **tol)
    torch.testing.assert_close(m1, m0, **tol)
    torch.testing.assert_close(g1, g0, rtol=1e-4 if dtype == torch.float32 else 1e-8, atol=1e-9)
    zero = feature_distance_fused(pred, torch.zeros_like(tgt))
    assert float(zero[0]) == 0.0 and float(zero[1]) == 0.0
