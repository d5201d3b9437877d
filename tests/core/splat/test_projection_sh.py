"""Projection and spherical harmonics against gsplat's own pure-torch references (CPU)."""

from __future__ import annotations

import pytest
import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)
from torch.testing import assert_close

from m3_core.splat import eval_sh, project_gaussians, rgb_to_sh, sh_to_rgb
from m3_core.splat.projection import covariance_3d
from tests.core.splat.conftest import make_scene


def test_covariance_matches_gsplat() -> None:
    sc = make_scene(n=50)
    ref, _ = _quat_scale_to_covar_preci(sc["quats"], sc["scales"], compute_preci=False)
    assert_close(covariance_3d(sc["quats"], sc["scales"]), ref, rtol=1e-12, atol=1e-14)


def test_projection_matches_gsplat_reference() -> None:
    sc = make_scene(n=200, n_cams=2)
    sc["means"][:5, 2] = -1.0  # behind the camera
    sc["means"][5:10, 0] += 4.0  # far outside the image (exercises the FOV clamp)
    covars, _ = _quat_scale_to_covar_preci(sc["quats"], sc["scales"], compute_preci=False)
    radii_ref, m2_ref, depth_ref, con_ref, _ = _fully_fused_projection(
        sc["means"], covars, sc["viewmats"], sc["Ks"], sc["width"], sc["height"], eps2d=0.3
    )
    proj = project_gaussians(
        sc["means"], sc["quats"], sc["scales"], None, sc["viewmats"], sc["Ks"], sc["width"],
        sc["height"], eps2d=0.3,
    )  # fmt: skip
    assert torch.equal(proj.radii, radii_ref)
    vis = (radii_ref > 0).all(-1)
    assert 50 < int(vis.sum()) < 400 and not vis[:, :5].any()
    assert_close(proj.means2d[vis], m2_ref[vis], rtol=1e-12, atol=1e-10)
    assert_close(proj.depths[vis], depth_ref[vis], rtol=1e-12, atol=1e-12)
    assert_close(proj.conics[vis], con_ref[vis], rtol=1e-10, atol=1e-12)
    assert (proj.means2d[~vis] == 0).all() and (proj.conics[~vis] == 0).all()


def test_opacity_aware_radius_is_tighter_and_culls_transparent() -> None:
    sc = make_scene(n=100)
    op = torch.linspace(0.001, 1.0, 100, dtype=torch.float64)
    args = (sc["means"], sc["quats"], sc["scales"])
    cams = (sc["viewmats"], sc["Ks"], sc["width"], sc["height"])
    loose = project_gaussians(*args, None, *cams).radii
    tight = project_gaussians(*args, op, *cams).radii
    assert (tight <= loose).all()
    assert (tight[0, op < 1.0 / 255.0] == 0).all()
    assert (tight < loose).any()  # low-opacity Gaussians get smaller boxes


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat(degree: int) -> None:
    g = torch.Generator().manual_seed(degree)
    coeffs = torch.randn(7, 5, 16, 3, generator=g, dtype=torch.float64)
    dirs = torch.randn(7, 5, 3, generator=g, dtype=torch.float64) * 3.0  # not unit length
    assert_close(eval_sh(degree, coeffs, dirs), _spherical_harmonics(degree, dirs, coeffs))


def test_rgb_sh_roundtrip() -> None:
    rgb = torch.rand(10, 3, dtype=torch.float64)
    assert_close(sh_to_rgb(rgb_to_sh(rgb)), rgb)
    dirs = torch.randn(10, 3, dtype=torch.float64)
    assert_close(eval_sh(0, rgb_to_sh(rgb)[:, None], dirs) + 0.5, rgb)
