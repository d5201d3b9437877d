"""The compiled projection and binning against their torch twins, and the one-pass render of
detached channels against two passes (forward and backward)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from m3_core.errors import InvalidInputError
from m3_core.splat import project_gaussians, rasterize
from m3_core.splat.tiles import bin_gaussians
from tests.core.splat.conftest import make_scene

GEOM = ("means", "quats", "scales")


def edge_scene(dtype: torch.dtype = torch.float64) -> dict:
    """Two cameras, with Gaussians behind a camera, beyond the 1.3x field-of-view clamp on
    either side (yet large enough to reach into the image), and one with a tiny quaternion."""
    sc = make_scene(n=300, width=70, height=50, n_cams=2, dtype=dtype, seed=5)
    sc["means"][0] = torch.tensor([0.0, 0.0, -1.0], dtype=dtype)  # behind
    sc["means"][1] = torch.tensor([2.4, 0.1, 3.0], dtype=dtype)  # x/z = 0.8 > 0.72: clamped
    sc["means"][2] = torch.tensor([-0.2, -2.3, 3.0], dtype=dtype)  # y/z below -0.72
    sc["scales"][1:3] = 0.4
    sc["quats"][3] = sc["quats"][3] * 1e-3  # unnormalised
    return sc


def projection_and_grads(sc: dict, backend: str, seed: int = 0):
    leaves = {k: sc[k].clone().requires_grad_() for k in GEOM}
    proj = project_gaussians(
        leaves["means"], leaves["quats"], leaves["scales"], sc["opacities"], sc["viewmats"],
        sc["Ks"], sc["width"], sc["height"], backend=backend,
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    outs = (proj.means2d, proj.depths, proj.conics)
    w = [torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype) for t in outs]
    sum((t * wi).sum() for t, wi in zip(outs, w)).backward()
    return proj, {k: v.grad for k, v in leaves.items()}


def test_compiled_projection_matches_torch_forward_and_backward() -> None:
    sc = edge_scene()
    ref, g_ref = projection_and_grads(sc, "torch")
    got, g_got = projection_and_grads(sc, "numba")
    # the edge cases are there: culled behind the camera, clamped but kept
    assert (ref.radii[:, 0] == 0).all() and (ref.radii[0, 1:3] > 0).all()
    assert torch.equal(got.radii, ref.radii)
    for a, b in zip(got[:3], ref[:3]):
        assert_close(a, b, rtol=1e-10, atol=1e-10)  # float64: the same expression
    for k in GEOM:
        scale = g_ref[k].abs().max().item()
        assert scale > 0 and g_ref[k][1:3].abs().max() > 0
        assert_close(g_got[k], g_ref[k], rtol=0, atol=1e-9 * scale, msg=f"grad wrt {k}")


def test_compiled_projection_float32() -> None:
    sc = {k: v.float() if torch.is_tensor(v) else v for k, v in edge_scene().items()}
    ref, g_ref = projection_and_grads(sc, "torch")
    got, g_got = projection_and_grads(sc, "numba")
    assert got.means2d.dtype == torch.float32 and g_got["means"].dtype == torch.float32
    ok = (ref.radii == got.radii).all(-1)  # a ceil() may land 1 px apart in float32
    assert ok.float().mean() > 0.99
    assert_close(got.means2d[ok], ref.means2d[ok], rtol=1e-5, atol=1e-4)
    assert_close(got.conics[ok], ref.conics[ok], rtol=1e-4, atol=1e-5)
    for k in GEOM:  # float32 torch vs float64 compiled arithmetic
        scale = g_ref[k].abs().max().item()
        assert_close(g_got[k], g_ref[k], rtol=0, atol=1e-4 * scale, msg=f"grad wrt {k}")


def test_compiled_binning_is_identical_to_torch() -> None:
    sc = make_scene(n=400, width=70, height=50, n_cams=2, dtype=torch.float32, seed=2)
    proj = project_gaussians(
        sc["means"], sc["quats"], sc["scales"], sc["opacities"], sc["viewmats"], sc["Ks"], 70, 50
    )
    proj.depths[0, :50] = 3.0  # ties: broken by index in both
    ref = bin_gaussians(proj.means2d, proj.radii, proj.depths, 70, 50, 16, backend="torch")
    got = bin_gaussians(proj.means2d, proj.radii, proj.depths, 70, 50, 16, backend="numba")
    assert ref.flatten_ids.numel() > 800
    assert torch.equal(got.offsets, ref.offsets)
    assert torch.equal(got.flatten_ids, ref.flatten_ids)
    assert torch.equal(got.tiles_per_gauss, ref.tiles_per_gauss)


def render(sc: dict, colors: torch.Tensor, backend: str, **kw):
    return rasterize(
        sc["means"], sc["quats"], sc["scales"], sc["opacities"], colors, sc["viewmats"],
        sc["Ks"], sc["width"], sc["height"], render_mode="RGB+ED", backend=backend, **kw,
    )  # fmt: skip


PARAMS = ("means", "quats", "scales", "opacities")


@pytest.mark.parametrize("backend", ["numba", "torch", "dense"])
def test_detached_channels_in_one_pass_equal_two_passes(backend: str) -> None:
    """Colour (3) + depth train the geometry; the query channels (5) only themselves. The
    geometry gradient equals that of the colour+depth loss alone; the queries' gradient and
    every output equal a second pass with detached geometry."""
    sc = make_scene(n=120, width=37, height=29, n_cams=2, n_ch=3, dtype=torch.float64, seed=9)
    queries = torch.randn(120, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bg = torch.rand(2, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    w_rgbd = torch.randn(2, 29, 37, 4, generator=g, dtype=torch.float64)
    w_q = torch.randn(2, 29, 37, 5, generator=g, dtype=torch.float64)

    def leaves():
        d = {k: sc[k].clone().requires_grad_() for k in PARAMS}
        return d, sc["colors"].clone().requires_grad_(), queries.clone().requires_grad_()

    # one pass: [rgb, q] with the last 5 channels detached
    geo, rgb, q = leaves()
    out, alpha, _ = render({**sc, **geo}, torch.cat([rgb, q], 1), backend, detach_channels=5,
                           backgrounds=bg)  # fmt: skip
    assert out.shape == (2, 29, 37, 9)
    rgbd = torch.cat([out[..., :3], out[..., -1:]], -1)
    ((rgbd * w_rgbd).sum() + (out[..., 3:8] * w_q).sum() + alpha.sum()).backward()

    # two passes: colour + depth, then the queries with detached geometry
    geo2, rgb2, q2 = leaves()
    out_c, alpha_c, _ = render({**sc, **geo2}, rgb2, backend, backgrounds=bg[:, :3])
    det = {k: v.detach() for k, v in geo2.items()}
    out_q, _, _ = render({**sc, **det}, q2, backend, backgrounds=bg[:, 3:])
    ((out_c * w_rgbd).sum() + (out_q[..., :5] * w_q).sum() + alpha_c.sum()).backward()

    assert_close(rgbd, out_c, rtol=1e-12, atol=1e-12)
    assert_close(out[..., 3:8], out_q[..., :5], rtol=1e-12, atol=1e-12)
    assert_close(alpha, alpha_c, rtol=1e-12, atol=1e-12)
    for k in PARAMS:
        scale = geo2[k].grad.abs().max().item()
        assert scale > 0, k
        assert_close(geo[k].grad, geo2[k].grad, rtol=0, atol=1e-10 * scale, msg=f"grad {k}")
    assert_close(rgb.grad, rgb2.grad, rtol=1e-10, atol=1e-12)
    assert q2.grad.abs().max() > 0
    assert_close(q.grad, q2.grad, rtol=1e-10, atol=1e-12)


def test_detached_geometry_differs_from_full_gradient() -> None:
    """The test above is not vacuous: without detaching, the query loss moves the geometry."""
    sc = make_scene(n=60, n_ch=6, dtype=torch.float64, seed=4)
    grads = []
    for k in (0, 3):
        means = sc["means"].clone().requires_grad_()
        out, _, _ = render({**sc, "means": means}, sc["colors"], "numba", detach_channels=k)
        out[..., 3:6].sum().backward()  # a loss on the last three channels only
        grads.append(means.grad)
    assert grads[0].abs().max() > 1e-3 and grads[1].abs().max() == 0


def test_detach_channels_and_unchecked_values_are_validated() -> None:
    sc = make_scene(n=10, n_ch=3)
    with pytest.raises(InvalidInputError, match="detach_channels"):
        render(sc, sc["colors"], "numba", detach_channels=4)
    bad = sc["means"].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        render({**sc, "means": bad}, sc["colors"], "numba")
    with pytest.raises(InvalidInputError, match="means must be"):  # shapes still checked
        render({**sc, "means": bad[:, :2]}, sc["colors"], "numba", check_values=False)


def test_compiled_kernels_release_the_gil() -> None:
    """The memory server renders in one thread while GroundObject answers in another: every
    compiled entry point (not the inlined helpers) must run without holding the GIL."""
    from m3_core.warmup import compiled_kernels

    entry = list(compiled_kernels().values())
    assert {f.__name__ for f in entry} >= {"composite_forward", "project_forward", "bin_tiles"}
    assert all(f.targetoptions.get("nogil") for f in entry), [f.__name__ for f in entry]


def test_kernel_threads_caps_only_the_calling_thread() -> None:
    import threading

    import numba

    from m3_core.splat.threads import kernel_threads

    full = numba.get_num_threads()
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        inside.wait(10)
        seen["other"] = numba.get_num_threads()  # another thread keeps its own count
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with kernel_threads(1) as n:
        seen["inside"] = numba.get_num_threads()
        inside.set()
        release.wait(10)
    t.join()
    assert n == 1 and seen == {"inside": 1, "other": full}
    assert numba.get_num_threads() == full  # restored
    with pytest.raises(InvalidInputError):
        with kernel_threads(-1):
            pass
