"""numba kernel vs pure-torch tile twin vs dense float64 reference, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from m3_core.splat import rasterize
from tests.core.splat.conftest import PARAMS, make_scene


def render_and_grads(sc: dict, backend: str, render_mode: str = "RGB+ED", seed: int = 1):
    """Render, backprop a fixed random weighting of colours and alphas; return outputs+grads."""
    leaves = {k: sc[k].clone().requires_grad_() for k in PARAMS}
    colors, alphas, meta = rasterize(
        leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"],
        leaves["colors"], sc["viewmats"], sc["Ks"], sc["width"], sc["height"],
        render_mode=render_mode, backend=backend,
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    # drawn in float64 so that float32 and float64 runs use the same weights
    w_c = torch.randn(colors.shape, generator=g, dtype=torch.float64).to(colors.dtype)
    w_a = torch.randn(alphas.shape, generator=g, dtype=torch.float64).to(alphas.dtype)
    ((colors * w_c).sum() + (alphas * w_a).sum()).backward()
    return colors.detach(), alphas.detach(), {k: v.grad for k, v in leaves.items()}, meta


def assert_grads_close(got: dict, ref: dict, rel: float) -> None:
    for k in PARAMS:
        scale = ref[k].abs().max().item()
        assert scale > 0, f"reference gradient for {k} is all zero: test would be vacuous"
        assert_close(got[k], ref[k], rtol=0, atol=rel * scale, msg=f"grad wrt {k}")


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_float64_matches_dense_tightly(backend: str) -> None:
    # C=2 cameras, partial tiles, 4 feature channels + expected depth
    sc = make_scene(n=80, n_cams=2, dtype=torch.float64)
    c, a, g, meta = render_and_grads(sc, backend)
    c_ref, a_ref, g_ref, _ = render_and_grads(sc, "dense")
    assert c.shape == (2, sc["height"], sc["width"], 5) and a.shape == (
        2,
        sc["height"],
        sc["width"],
        1,
    )
    assert a_ref.max() > 0.5, "scene should cover the image"
    assert_close(c, c_ref, rtol=1e-10, atol=1e-10)
    assert_close(a, a_ref, rtol=1e-10, atol=1e-10)
    assert_grads_close(g, g_ref, rel=1e-9)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_float32_matches_dense_loosely(backend: str) -> None:
    sc64 = make_scene(n=80, n_cams=1, dtype=torch.float64, seed=3)
    sc32 = {k: v.float() if torch.is_tensor(v) else v for k, v in sc64.items()}
    c, a, g, _ = render_and_grads(sc32, backend, render_mode="RGB")
    c_ref, a_ref, g_ref, _ = render_and_grads(sc64, "dense", render_mode="RGB")
    assert c.dtype == torch.float32 and g["means"].dtype == torch.float32
    # float32 projection + threshold decisions (alpha vs 1/255, T vs 1e-4) in float32
    assert_close(c, c_ref.float(), rtol=0, atol=2e-4)
    assert_close(a, a_ref.float(), rtol=0, atol=2e-4)
    assert_grads_close({k: v.double() for k, v in g.items()}, g_ref, rel=2e-3)


def test_numba_matches_torch_twin_on_larger_scene() -> None:
    sc = make_scene(n=400, width=70, height=50, n_ch=7, dtype=torch.float64, seed=5)
    c, a, g, meta = render_and_grads(sc, "numba")
    c_t, a_t, g_t, _ = render_and_grads(sc, "torch")
    assert meta["flatten_ids"].numel() > 400  # many Gaussians in several tiles
    assert_close(c, c_t, rtol=1e-10, atol=1e-10)
    assert_close(a, a_t, rtol=1e-10, atol=1e-10)
    assert_grads_close(g, g_t, rel=1e-9)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_gradcheck_tiny(backend: str) -> None:
    sc = make_scene(n=6, width=10, height=9, n_ch=2, dtype=torch.float64, seed=7)
    sc["scales"] = sc["scales"] + 0.1  # big enough to cover several pixels smoothly
    sc["opacities"] = sc["opacities"].clamp(0.1, 0.8)  # away from the 0.999 clamp

    def fn(means, quats, scales, opacities, colors):
        out, alpha, _ = rasterize(
            means, quats, scales, opacities, colors, sc["viewmats"], sc["Ks"], sc["width"],
            sc["height"], render_mode="RGB+D", backend=backend,
        )  # fmt: skip
        return out, alpha

    inputs = tuple(sc[k].clone().requires_grad_() for k in PARAMS)
    assert fn(*inputs)[1].max() > 0.3
    # fast mode: checks random projections of the Jacobian (one backward pass each)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-6, rtol=1e-5, fast_mode=True)
