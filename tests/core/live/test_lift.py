"""Lifting 2D features onto Gaussians: the one-pass backward equals the dense reference."""

from __future__ import annotations

import torch

from m3_core.live import LiveConfig, LiveMemory
from m3_core.live.lift import lift, lift_dense, seed_maps, split_sums
from tests.core.live.conftest import labels_config, room_keyframes


def test_lift_equals_the_dense_weighted_sums():
    """Per-Gaussian sums of a keyframe's upsampled features and validity, and the pixel mass,
    from one rasterize fwd + bwd (numba and torch backends) vs the weights rendered
    explicitly (one-hot colours, float64 dense compositor): within 1e-4 relative. (Rolled
    cameras: see ``room_keyframes``.)"""
    kf = room_keyframes(8, 32, 24, stride=4, cell_noise=0.1, roll=0.2)[1]
    live = LiveMemory(labels_config(), LiveConfig(seed_stride=3, lift_scale=1.0, fit_steps=0))
    live.add_keyframe(kf)
    n = live.num_gaussians
    assert 50 < n < 200
    grid = kf.features["labels"].clone()
    grid[0, :3] = 0.0  # cells without a feature
    seed = seed_maps({"labels": grid}, ["labels"], 32, 24)  # [24, 32, 16 + 1 + 1]
    ref = lift_dense(live.params, kf.camera, seed)  # [N, 18]
    scale = float(ref.abs().max())
    assert float(ref[:, -1].max()) > 1.0  # Gaussians really cover pixels
    for backend in ("numba", "torch"):
        got = lift(live.params, kf.camera, seed, backend=backend)
        torch.testing.assert_close(got, ref, atol=1e-4 * scale, rtol=1e-4)
    sums, masses, vis = split_sums(ref, [16])
    assert bool((masses[0] <= vis + 1e-9).all())  # invalid cells carry no feature mass


def test_live_lifted_features_are_the_visibility_weighted_average():
    """After two keyframes the live memory's lifted feature of each Gaussian equals the
    brute-force average sum_p w_i(p) F(p) / sum_p w_i(p) valid(p) over both views (dense
    render of the final Gaussians at the lifting resolution; Gaussians seeded by the second
    keyframe only see that one)."""
    frames = room_keyframes(8, 40, 30, stride=5, cell_noise=0.1, roll=0.2)[1::2][
        :2
    ]  # pitched and rolled: no depth ties
    live = LiveMemory(labels_config(), LiveConfig(seed_stride=4, lift_scale=0.5, fit_steps=0))
    live.add_keyframe(frames[0])
    n0 = live.num_gaussians
    live.add_keyframe(frames[1])
    sums = torch.zeros(live.num_gaussians, 16)
    mass = torch.zeros(live.num_gaussians)
    for k, kf in enumerate(frames):
        cam = kf.camera.scaled(0.5)
        seed = seed_maps(kf.features, ["labels"], cam.width, cam.height)
        rows = slice(0, n0) if k == 0 else slice(None)
        params = {key: v[rows] for key, v in live.params.items()}
        part = lift_dense(params, cam, seed)  # [n, 18]
        sums[rows] += part[:, :16]
        mass[rows] += part[:, 16]
    seen = mass > 1e-2
    assert int(seen.sum()) > 0.8 * live.num_gaussians
    ref = sums[seen] / mass[seen, None]
    torch.testing.assert_close(live.lifted_features("labels")[seen], ref, atol=1e-4, rtol=1e-3)
