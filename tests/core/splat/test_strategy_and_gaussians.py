"""Gaussian initialisation, and gsplat.DefaultStrategy driven by our CPU meta."""

from __future__ import annotations

import pytest
import torch
from gsplat.strategy import DefaultStrategy
from torch.testing import assert_close

from m3_core.errors import InvalidInputError
from m3_core.splat import (
    PARAM_KEYS,
    activated,
    init_gaussians,
    random_points,
    rasterize,
    sh_coeffs,
    sh_to_rgb,
)


def test_init_gaussians_shapes_and_values() -> None:
    g = torch.Generator().manual_seed(0)
    pts = random_points(64, extent=2.0, center=(0.0, 0.0, 5.0), generator=g)
    assert pts.shape == (64, 3) and (pts[:, 2] - 5.0).abs().max() <= 2.0
    rgb = torch.rand(64, 3, generator=g)
    p = init_gaussians(pts, rgb, query_dim=12, sh_degree=3, init_opacity=0.2, generator=g)
    assert set(p.keys()) == set(PARAM_KEYS)
    shapes = {k: tuple(v.shape) for k, v in p.items()}
    assert shapes == {
        "means": (64, 3), "scales": (64, 3), "quats": (64, 4), "opacities": (64,),
        "sh0": (64, 1, 3), "shN": (64, 15, 3), "queries": (64, 12),
    }  # fmt: skip
    # scale = RMS distance to the 3 nearest neighbours (brute force here)
    d = torch.cdist(pts.double(), pts.double())
    d.fill_diagonal_(float("inf"))
    knn = d.topk(3, largest=False).values
    assert_close(p["scales"][:, 0].double(), torch.log((knn**2).mean(1).sqrt()), atol=1e-5, rtol=0)
    means, quats, scales, opac = activated(p)
    assert_close(quats.norm(dim=-1), torch.ones(64))
    assert_close(opac, torch.full((64,), 0.2))
    assert_close(sh_to_rgb(p["sh0"][:, 0]), rgb)
    assert sh_coeffs(p).shape == (64, 16, 3)
    assert p["queries"].std() < 0.05 and p["queries"].abs().sum() > 0
    with pytest.raises(InvalidInputError):
        init_gaussians(torch.zeros(0, 3), None, 4)
    with pytest.raises(InvalidInputError):
        init_gaussians(pts, rgb[:3], 4)


def test_default_strategy_refines_cpu_gaussians_and_keeps_everything_aligned() -> None:
    g = torch.Generator().manual_seed(1)
    pts = random_points(120, extent=0.8, center=(0.0, 0.0, 3.0), generator=g)
    params = init_gaussians(pts, None, query_dim=6, sh_degree=1, init_opacity=0.5, generator=g)
    with torch.no_grad():
        params["opacities"][:10] = -10.0  # sigmoid < prune_opa: pruned at refine
    optimizers = {k: torch.optim.Adam([v], lr=1e-3) for k, v in params.items()}
    strategy = DefaultStrategy(
        refine_start_iter=0, refine_every=2, reset_every=10_000, grow_grad2d=1e-9,
        prune_opa=0.005, grow_scale3d=0.01,
    )  # fmt: skip
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats = torch.eye(4)[None]
    ks = torch.tensor([[[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]]])
    n0 = params["means"].shape[0]
    for step in range(3):
        means, quats, scales, opac = activated(params)
        feats = torch.cat([sh_to_rgb(params["sh0"][:, 0]), params["queries"]], dim=-1)
        out, alpha, info = rasterize(means, quats, scales, opac, feats, viewmats, ks, 48, 32)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        # shN gets a (tiny) gradient too, so every Adam state exists before refinement
        (out.square().mean() + alpha.mean() + 1e-3 * params["shN"].square().sum()).backward()
        assert info["means2d"].grad is not None and info["means2d"].grad.abs().sum() > 0
        for opt in optimizers.values():
            opt.step()
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
    n1 = params["means"].shape[0]
    assert n1 != n0
    for k, v in params.items():
        assert v.shape[0] == n1, k
        opt_param = optimizers[k].param_groups[0]["params"][0]
        assert opt_param is v, k  # the optimizer tracks the new tensor
        st = optimizers[k].state[opt_param]
        assert st["exp_avg"].shape == v.shape and st["exp_avg_sq"].shape == v.shape, k
    assert params["queries"].shape == (n1, 6)
    assert (torch.sigmoid(params["opacities"]) > 0.005).all()  # the 10 transparent ones are gone
