"""Seeding: new Gaussians only where the keyframe's depth is not explained yet."""

from __future__ import annotations

import pytest
import torch

from m3_core.errors import InvalidInputError
from m3_core.live import Keyframe, LiveConfig, LiveMemory
from tests.core.live.conftest import labels_config, room_keyframes


def test_the_same_keyframe_twice_adds_almost_nothing():
    kf = room_keyframes(4, 64, 48)[0]
    live = LiveMemory(labels_config(), LiveConfig(seed_stride=4, fit_steps=0))
    first = live.add_keyframe(kf)["gaussians_added"]
    assert first == pytest.approx((64 // 4) * (48 // 4), rel=0.01)  # every pixel has depth
    again = live.add_keyframe(kf)["gaussians_added"]
    assert again <= 0.01 * first


def test_only_unexplained_depth_is_seeded():
    """Second keyframe: same view, the right half of the depth pushed 30 % back. The new
    Gaussians come from the right half (at most 1 % of the first keyframe's elsewhere, as
    for an identical keyframe), at the new depth."""
    kf = room_keyframes(4, 64, 48)[0]
    live = LiveMemory(labels_config(), LiveConfig(seed_stride=4, fit_steps=0))
    n0 = live.add_keyframe(kf)["gaussians_added"]
    depth = kf.depth.clone()
    depth[:, 32:] *= 1.3
    moved = Keyframe(kf.image, depth, kf.camera, kf.features, "moved")
    added = live.add_keyframe(moved)["gaussians_added"]
    assert added == pytest.approx(n0 / 2, rel=0.1)
    new = live.params["means"][n0:]  # [added, 3] world
    w2c = kf.camera.viewmat
    cam = new @ w2c[:3, :3].T + w2c[:3, 3]  # camera frame
    u = kf.camera.fx * cam[:, 0] / cam[:, 2] + kf.camera.cx
    right = u > 32
    assert int((~right).sum()) <= 0.01 * n0
    ui = u[right].long().clamp(0, 63)
    vi = (kf.camera.fy * cam[right, 1] / cam[right, 2] + kf.camera.cy).long().clamp(0, 47)
    torch.testing.assert_close(cam[right, 2], depth[vi, ui], rtol=1e-4, atol=1e-4)


def test_bad_keyframes_are_refused():
    kf = room_keyframes(1, 32, 24)[0]
    live = LiveMemory(labels_config())
    with pytest.raises(InvalidInputError, match="image must be"):
        Keyframe(kf.image[:-1], kf.depth, kf.camera, kf.features)
    with pytest.raises(InvalidInputError, match="negative"):
        Keyframe(kf.image, -kf.depth, kf.camera, kf.features)
    with pytest.raises(InvalidInputError, match="needs feature 'labels'"):
        live.add_keyframe(Keyframe(kf.image, kf.depth, kf.camera, {}))
    with pytest.raises(InvalidInputError, match="no keyframe"):
        live.snapshot()
