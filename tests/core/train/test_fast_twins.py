"""The training step's fast paths against their slow twins: separable SSIM vs torchmetrics,
grid_sample vs the hand-written bilinear sampler, fused vs per-tensor Adam, one render pass
with detached query geometry vs two passes (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from m3_core.data.features import sample_bilinear
from m3_core.memory.gma import gma_decode
from m3_core.train.losses import feature_loss, photometric_loss, sample_grid, ssim, ssim_reference


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_separable_ssim_equals_torchmetrics(dtype: torch.dtype, tol: float) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(37, 53, 3, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    b = (a.detach() + 0.2 * torch.randn(37, 53, 3, generator=g, dtype=dtype)).clamp(0, 1)
    s, s_ref = ssim(a, b), ssim_reference(a, b)
    assert 0.2 < float(s_ref.detach()) < 0.95
    assert_close(s, s_ref, rtol=0, atol=tol)
    (g_fast,) = torch.autograd.grad(s, a)
    (g_ref,) = torch.autograd.grad(s_ref, a)
    assert_close(g_fast, g_ref, rtol=0, atol=tol * g_ref.abs().max().item())
    fast = photometric_loss(a, b, 0.2)
    assert_close(fast, photometric_loss(a, b, 0.2, fast=False), rtol=0, atol=tol)


def test_grid_sample_equals_the_bilinear_sampler() -> None:
    g = torch.Generator().manual_seed(1)
    qmap = torch.randn(24, 32, 6, generator=g, dtype=torch.float64, requires_grad=True)
    uv = torch.rand(300, 2, generator=g, dtype=torch.float64)
    uv[:4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.999, 0.001], [0.01, 0.5]])  # borders
    w = torch.randn(300, 6, generator=g, dtype=torch.float64)
    fast = sample_grid(qmap, uv)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), qmap)
    ref = sample_bilinear(qmap, uv)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), qmap)
    assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-12)
    # half-precision ground-truth grids are sampled in float32
    grid16 = torch.randn(6, 8, 40, generator=g).half()
    got = sample_grid(grid16, uv.float())
    assert got.dtype == torch.float32
    assert_close(got, sample_bilinear(grid16.float(), uv.float()), rtol=1e-5, atol=1e-5)


def test_feature_loss_fast_equals_slow() -> None:
    g = torch.Generator().manual_seed(2)
    bank = torch.randn(12, 20, generator=g)
    proj = torch.randn(6, 20, generator=g, requires_grad=True)
    qmap = torch.randn(30, 40, 6, generator=g, requires_grad=True)
    gt = bank[torch.randint(0, 12, (8, 10), generator=g)].half()  # [8, 10, 20]
    uv = torch.rand(500, 2, generator=g)
    out = []
    for fast in (True, False):
        loss, _ = feature_loss(qmap, gt, lambda q: gma_decode(q, proj, bank), uv, fast=fast)
        out.append((loss, *torch.autograd.grad(loss, (qmap, proj))))
    for a, b in zip(out[0], out[1]):
        assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert out[0][1].abs().max() > 0


def test_fused_adam_equals_per_tensor_adam() -> None:
    from types import SimpleNamespace

    from m3_core.train.config import OptimConfig
    from m3_core.train.optim import build_optimizers

    g = torch.Generator().manual_seed(3)
    shapes = {"means": (50, 3), "scales": (50, 3), "quats": (50, 4), "opacities": (50,),
              "sh0": (50, 1, 3), "shN": (50, 3, 3), "queries": (50, 8)}  # fmt: skip
    init = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    grads = [{k: torch.randn(s, generator=g) for k, s in shapes.items()} for _ in range(5)]
    final = []
    for fused in (True, False):
        params = {k: torch.nn.Parameter(v.clone()) for k, v in init.items()}
        mem = SimpleNamespace(gaussians=params, projections={})
        opts = build_optimizers(mem, OptimConfig(), 2.0, fused=fused)
        assert opts["means"].defaults["fused"] is (True if fused else None)
        for step in grads:
            for k, p in params.items():
                p.grad = step[k].clone()
            for o in opts.values():
                o.step()
        final.append(params)
    for k in shapes:
        assert (final[0][k] - init[k]).abs().max() > 1e-4
        assert_close(final[0][k], final[1][k], rtol=1e-6, atol=1e-7, msg=k)


def test_render_one_pass_equals_two_passes(tiny_scene) -> None:
    """The trainer's render: colour + depth + queries in one pass with detached query geometry
    give the values and gradients of the two-pass render (float64)."""
    from m3_core.memory.render import render_gaussians
    from m3_core.splat import init_gaussians
    from m3_core.train.init import initial_points

    gen = torch.Generator().manual_seed(4)
    pts, cols, _ = initial_points(tiny_scene, tiny_scene.train_indices[:2], 800, gen)
    base = init_gaussians(pts, cols, 8, 1, init_opacity=0.5, generator=gen)
    base = {k: v.detach().double() for k, v in base.items()}
    base["queries"] = torch.randn(base["queries"].shape, generator=gen, dtype=torch.float64)
    cam = tiny_scene.frames[tiny_scene.train_indices[0]].camera
    w = None
    results = []
    for one_pass in (True, False):
        params = {k: v.clone().requires_grad_() for k, v in base.items()}
        out = render_gaussians(
            params, cam, sh_degree=1, detach_query_geometry=True, one_pass=one_pass,
            background=torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64),
        )  # fmt: skip
        if w is None:
            w = [torch.randn(t.shape, generator=gen, dtype=torch.float64)
                 for t in (out.rgb, out.depth, out.queries)]  # fmt: skip
        loss = (out.rgb * w[0]).sum() + (out.depth * w[1]).sum() + (out.queries * w[2]).sum()
        loss.backward()
        results.append((out, {k: v.grad for k, v in params.items()}))
    (o1, g1), (o2, g2) = results
    assert o1.alpha.max() > 0.5
    for a, b in ((o1.rgb, o2.rgb), (o1.depth, o2.depth), (o1.queries, o2.queries)):
        assert_close(a, b, rtol=1e-12, atol=1e-12)
    for k in g2:
        scale = g2[k].abs().max().item()
        assert scale > 0, k
        assert_close(g1[k], g2[k], rtol=0, atol=1e-10 * scale, msg=f"grad {k}")
