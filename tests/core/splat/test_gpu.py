"""The CPU backend against gsplat's CUDA rasterizer (needs a CUDA device)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from m3_core.splat import rasterize
from tests.core.splat.conftest import PARAMS, make_scene


@pytest.mark.gpu
@pytest.mark.parametrize(("render_mode", "detach"), [("RGB", 0), ("RGB+ED", 0), ("RGB+ED", 16)])
def test_cpu_backend_matches_gsplat_cuda(render_mode: str, detach: int) -> None:
    """Also the detached channels: one CPU pass against gsplat's two passes."""
    sc = make_scene(n=300, width=64, height=48, n_cams=2, n_ch=20, dtype=torch.float32, seed=2)
    outs = {}
    for dev in ("cpu", "cuda"):
        s = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in sc.items()}
        leaves = {k: s[k].clone().requires_grad_() for k in PARAMS}
        c, a, meta = rasterize(
            *(leaves[k] for k in PARAMS), s["viewmats"], s["Ks"], s["width"], s["height"],
            render_mode=render_mode, detach_channels=detach,
        )  # fmt: skip
        w = torch.linspace(-1, 1, c.numel(), device=dev).reshape(c.shape)
        ((c * w).sum() + a.sum()).backward()
        outs[dev] = (c, a, meta, {k: v.grad for k, v in leaves.items()})
    c, a, meta, g = outs["cpu"]
    cg, ag, metag, gg = outs["cuda"]
    assert meta["backend"] == "numba" and a.max() > 0.5
    assert torch.equal(meta["radii"], metag["radii"].cpu())
    # float32 on both sides; borderline alpha/T decisions may differ in a few pixels
    assert_close(c, cg.cpu(), rtol=1e-3, atol=1e-3)
    assert_close(a, ag.cpu(), rtol=1e-3, atol=1e-3)
    for k in PARAMS:
        ref = gg[k].cpu()
        assert_close(g[k], ref, rtol=0, atol=5e-3 * ref.abs().max().item(), msg=k)
