"""rasterize(): render modes, culling edge cases, SH colours, backgrounds, meta, bad input."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from m3_core.errors import InvalidInputError
from m3_core.splat import eval_sh, rasterize
from tests.core.splat.conftest import make_scene


def call(sc: dict, backend: str = "numba", **kw):
    return rasterize(
        sc["means"], sc["quats"], sc["scales"], sc["opacities"], kw.pop("colors", sc["colors"]),
        sc["viewmats"], sc["Ks"], sc["width"], sc["height"], backend=backend, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["numba", "torch", "dense"])
def test_render_modes_are_consistent(backend: str) -> None:
    sc = make_scene(n=50, n_cams=2)
    rgb, alpha, meta = call(sc, backend, render_mode="RGB")
    rgbd, alpha2, _ = call(sc, backend, render_mode="RGB+D")
    rgbed, _, _ = call(sc, backend, render_mode="RGB+ED")
    d, _, _ = call(sc, backend, render_mode="D")
    ed, _, _ = call(sc, backend, render_mode="ED")
    assert rgb.shape[-1] == 4 and rgbd.shape[-1] == 5 and d.shape[-1] == 1
    assert_close(rgbd[..., :4], rgb)
    assert_close(alpha2, alpha)
    assert_close(rgbd[..., 4:], d)
    assert_close(rgbed[..., 4:], ed)
    assert_close(ed, d / alpha.clamp_min(1e-10))
    # expected depth is a weighted mean of visible depths
    vis = meta["depths"][meta["radii"][..., 0] > 0]
    covered = alpha[..., 0] > 0.05
    assert ed[..., 0][covered].min() >= vis.min() - 1e-9
    assert ed[..., 0][covered].max() <= vis.max() + 1e-9


def test_empty_scene_and_all_culled() -> None:
    sc = make_scene(n=0, n_cams=2)
    for backend in ("numba", "torch", "dense"):
        c, a, meta = call(sc, backend, render_mode="RGB+ED")
        assert c.shape == (2, sc["height"], sc["width"], 5)
        assert torch.count_nonzero(c) == 0 and torch.count_nonzero(a) == 0
        assert meta["means2d"].shape == (2, 0, 2) and meta["radii"].shape == (2, 0, 2)
    sc = make_scene(n=20)
    sc["means"][:, 2] = 2e3  # beyond far_plane below
    c, a, meta = call(sc, render_mode="RGB", far_plane=100.0)
    assert torch.count_nonzero(a) == 0 and (meta["radii"] == 0).all()


def test_gaussians_behind_camera_are_culled_and_get_no_gradient() -> None:
    sc = make_scene(n=30)
    sc["means"][:10, 2] *= -1.0  # behind the camera
    sc["means"][10, 2] = 0.0  # exactly at the camera centre: no inf/NaN anywhere
    means = sc["means"].clone().requires_grad_()
    c, a, meta = rasterize(
        means, sc["quats"], sc["scales"], sc["opacities"], sc["colors"], sc["viewmats"],
        sc["Ks"], sc["width"], sc["height"],
    )  # fmt: skip
    assert (meta["radii"][0, :11] == 0).all() and (meta["radii"][0, 11:] > 0).any()
    (c.sum() + a.sum()).backward()
    assert torch.isfinite(means.grad).all()
    assert (means.grad[:11] == 0).all() and means.grad[11:].abs().sum() > 0
    ref, ref_a, _ = call(
        {**sc, **{k: sc[k][11:] for k in ("means", "quats", "scales", "opacities", "colors")}}
    )
    assert_close(c, ref)
    assert_close(a, ref_a)


def test_per_camera_colors_and_backgrounds() -> None:
    sc = make_scene(n=40, n_cams=2)
    per_cam = torch.stack([sc["colors"], 1.0 - sc["colors"]])  # [C, N, D]
    c, a, _ = call(sc, colors=per_cam)
    c0, _, _ = call(sc, colors=sc["colors"])
    c1, _, _ = call(sc, colors=1.0 - sc["colors"])
    assert_close(c[0], c0[0])
    assert_close(c[1], c1[1])
    bg = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.5, 0.0]], dtype=torch.float64)
    cb, ab, _ = call(sc, backgrounds=bg, render_mode="RGB+ED")
    ce, _, _ = call(sc, render_mode="RGB+ED")
    assert_close(cb[..., :4], ce[..., :4] + (1 - ab) * bg[:, None, None, :])
    assert_close(cb[..., 4:], ce[..., 4:])  # depth gets no background


def test_sh_colours_match_manual_evaluation() -> None:
    sc = make_scene(n=40, n_cams=2)
    g = torch.Generator().manual_seed(4)
    shs = torch.randn(40, 16, 3, generator=g, dtype=torch.float64) * 0.3
    out, _, _ = call(sc, colors=shs, sh_degree=2)
    campos = torch.linalg.inv(sc["viewmats"])[:, :3, 3]
    feats = (
        eval_sh(2, shs[None].expand(2, -1, -1, -1), sc["means"][None] - campos[:, None]) + 0.5
    ).clamp_min(0)
    ref, _, _ = call(sc, colors=feats)  # per-camera colours [C, N, 3]
    assert out.shape[-1] == 3
    assert_close(out, ref)


def test_meta_is_gsplat_shaped() -> None:
    sc = make_scene(n=25, n_cams=2)
    means = sc["means"].clone().requires_grad_()
    c, _, meta = rasterize(
        means, sc["quats"], sc["scales"], sc["opacities"], sc["colors"], sc["viewmats"],
        sc["Ks"], sc["width"], sc["height"],
    )  # fmt: skip
    assert meta["means2d"].shape == (2, 25, 2) and not meta["means2d"].is_leaf
    assert meta["radii"].dtype == torch.int32 and meta["radii"].shape == (2, 25, 2)
    assert meta["gaussian_ids"] is None and meta["n_cameras"] == 2
    assert (meta["width"], meta["height"]) == (sc["width"], sc["height"])
    assert meta["conics"].shape == (2, 25, 3) and meta["depths"].shape == (2, 25)
    meta["means2d"].retain_grad()
    c.sum().backward()
    assert meta["means2d"].grad.shape == (2, 25, 2) and meta["means2d"].grad.abs().sum() > 0


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: s["means"].__setitem__((3, 0), float("nan")), "means contains NaN"),
        (lambda s: s.__setitem__("quats", s["quats"][:-1]), "quats must be"),
        (lambda s: s.__setitem__("colors", s["colors"][:-1]), "colors must be"),
        (lambda s: s.__setitem__("Ks", s["Ks"][0]), "Ks must be"),
        (lambda s: s.__setitem__("opacities", s["opacities"][:, None]), "opacities must be"),
        (lambda s: s.__setitem__("width", 0), "image size"),
    ],
)
def test_bad_input_raises_invalid_input(change, match: str) -> None:
    sc = make_scene(n=10)
    before = {k: v.clone() for k, v in sc.items() if torch.is_tensor(v)}
    change(sc)
    snapshot = {k: v.clone() for k, v in sc.items() if torch.is_tensor(v)}
    with pytest.raises(InvalidInputError, match=match):
        call(sc)
    for k, v in snapshot.items():  # inputs untouched by the failed call
        assert torch.equal(v, sc[k]) or (v.isnan().any() and torch.equal(v.isnan(), sc[k].isnan()))
    assert before.keys() == snapshot.keys()


def test_bad_mode_backend_and_sh_shape() -> None:
    sc = make_scene(n=10)
    with pytest.raises(InvalidInputError, match="render_mode"):
        call(sc, render_mode="RGBA")
    with pytest.raises(InvalidInputError, match="backend"):
        call(sc, backend="opengl")
    with pytest.raises(InvalidInputError, match="needs CUDA"):
        call(sc, backend="gsplat")
    with pytest.raises(InvalidInputError, match="SH colors"):
        call(sc, colors=torch.zeros(10, 4, 3, dtype=torch.float64), sh_degree=3)
