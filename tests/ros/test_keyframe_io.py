"""Keyframe storage policy: which recording a (re)started collector writes, a trainer that
refuses keyframes naming paths outside its recordings folder, and distorted lenses turned
into pinhole keyframes exactly once between the camera and the trainer's disk."""

from __future__ import annotations

import os
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")
from m3_ros.keyframe_io import KeyframeReceiver, choose_recording  # noqa: E402
from m3_ros.msg import Keyframe  # noqa: E402


def _recording(root, name: str, age_s: float) -> None:
    f = root / name / "transforms.json"
    f.parent.mkdir(parents=True)
    f.write_text("{}")
    t = time.time() - age_s
    os.utime(f, (t, t))


def test_a_respawned_collector_continues_its_recent_recording(tmp_path):
    _recording(tmp_path, "rec_old", age_s=3600)
    _recording(tmp_path, "rec_recent", age_s=30)
    _recording(tmp_path, "rec_older_recent", age_s=120)
    _recording(tmp_path, "walk", age_s=1)  # named recordings are never picked implicitly
    assert choose_recording(tmp_path, "", 300) == "rec_recent"
    assert choose_recording(tmp_path, "kitchen", 300) == "kitchen"
    fresh = choose_recording(tmp_path, "", 10)  # nothing that recent: a new recording
    assert re.fullmatch(r"rec_\d{8}_\d{6}", fresh) and fresh not in {"rec_old", "rec_recent"}
    assert re.fullmatch(r"rec_\d{8}_\d{6}", choose_recording(tmp_path / "none", "", 300))


@pytest.mark.parametrize("rid", ["../escape", "/abs", "", "..", "a/b"])
def test_receiver_refuses_recording_ids_that_are_not_plain_names(rid, tmp_path):
    logged: list = []
    logger = SimpleNamespace(warning=logged.append)
    KeyframeReceiver(tmp_path / "rec", logger).on_keyframe(Keyframe(recording_id=rid, name="f"))
    assert logged and "bad recording_id" in logged[0]
    assert not any(tmp_path.rglob("*transforms.json")) and not (tmp_path / "escape").exists()


def distorted_frame():
    """A 160x120 wide-angle frame (plumb_bob) with depth, as a robot driver publishes it."""
    from m3_core.types import Camera, pose_matrix
    from m3_ros import convert

    cam = Camera(120.0, 118.0, 81.0, 58.5, 160, 120, torch.eye(4))
    info = convert.camera_info_msg(cam, "cam_optical")
    info.d = [-0.28, 0.09, 0.001, -0.0015, -0.012]
    info.p = [0.0] * 12  # unset: the rectifier picks the pinhole intrinsics
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    depth = np.full((120, 160), 2.0, np.float32)
    c2w = pose_matrix([1.0, 2.0, 0.5], [0.5, -0.5, 0.5, -0.5])
    return rgb, depth, info, c2w


def test_distorted_keyframes_are_undistorted_once_and_streamed_as_written(tmp_path):
    """Collector side: rectify (m3_core's Rectifier, tested against OpenCV there); the stream
    carries the rectified images and pinhole camera info, so the receiver writes the same
    keyframe and does not undistort a second time."""
    from m3_core.data import load_dataset
    from m3_core.data.undistort import Rectifier, RectifierCache
    from m3_ros import convert
    from m3_ros.keyframe_io import KeyframeJob, KeyframeSink, check_frame, rectify

    rgb, depth, info, c2w = distorted_frame()
    rect = check_frame(rgb, depth, info, RectifierCache())
    out_rgb, out_depth, cam, remapped = rectify(rgb, depth, info, c2w, rect)
    want = Rectifier(convert.lens_model(info))
    assert remapped and not want.identity
    np.testing.assert_array_equal(out_rgb, want.rgb(rgb))
    np.testing.assert_array_equal(out_depth, want.depth(depth))
    assert (cam.fx, cam.cx) == pytest.approx((want.new_k[0, 0], want.new_k[0, 2]))
    torch.testing.assert_close(cam.c2w, c2w.float(), atol=1e-6, rtol=0)  # R = I: same pose

    img = convert.array_to_image(rgb, "rgb8")
    logger = SimpleNamespace(info=lambda m: None, warning=print, error=print)
    sink = KeyframeSink(tmp_path / "unused", "walk", logger)
    job = KeyframeJob(out_rgb, cam, out_depth, img, info, "map", remapped)
    msg = sink.message("frame_000000", job)
    sink.close()
    assert (list(msg.camera_info.d), msg.camera_info.k[0]) == ([0.0] * 5, cam.fx)
    KeyframeReceiver(tmp_path / "rec", logger).on_keyframe(msg)
    got = load_dataset(tmp_path / "rec" / "walk")
    torch.testing.assert_close(
        got.load_image(0), torch.from_numpy(out_rgb).float() / 255, atol=0, rtol=0
    )
    torch.testing.assert_close(got.load_depth(0), torch.from_numpy(out_depth), atol=1e-3, rtol=0)
    f = got.frames[0].camera
    assert (f.fx, f.fy, f.cx, f.cy) == pytest.approx((cam.fx, cam.fy, cam.cx, cam.cy))
    torch.testing.assert_close(f.c2w, cam.c2w, atol=1e-5, rtol=0)


def test_image_rect_topics_take_p_and_are_not_remapped():
    from m3_core.data.undistort import RectifierCache
    from m3_ros.keyframe_io import check_frame, rectify

    rgb, depth, info, c2w = distorted_frame()
    info.p = [100.0, 0.0, 79.0, 0.0, 0.0, 101.0, 60.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    rect = check_frame(rgb, depth, info, RectifierCache(), image_rectified=True)
    assert rect is None
    out_rgb, out_depth, cam, remapped = rectify(rgb, depth, info, c2w, rect)
    assert not remapped and out_rgb is rgb and out_depth is depth
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (100.0, 101.0, 79.0, 60.0)


def test_a_receiver_undistorts_keyframes_from_a_sender_that_did_not(tmp_path):
    from m3_core.data import load_dataset
    from m3_core.data.undistort import Rectifier
    from m3_ros import convert

    rgb, _, info, c2w = distorted_frame()
    msg = Keyframe(recording_id="walk", name="frame_000000", camera_info=info)
    msg.image = convert.rgb_to_compressed(rgb, "png")
    msg.camera_pose = convert.matrix_to_pose_msg(c2w)
    KeyframeReceiver(tmp_path, SimpleNamespace(warning=print)).on_keyframe(msg)
    want = Rectifier(convert.lens_model(info)).rgb(rgb)
    got = load_dataset(tmp_path / "walk").load_image(0)
    torch.testing.assert_close(got, torch.from_numpy(want).float() / 255, atol=0, rtol=0)


def test_frames_that_cannot_become_keyframes_are_refused_before_selection():
    from m3_core.data.undistort import RectifierCache
    from m3_core.errors import InvalidInputError
    from m3_ros.keyframe_io import check_frame

    rgb, depth, info, _ = distorted_frame()
    cache = RectifierCache()
    check_frame(rgb, depth, info, cache)  # fine, and its remap tables are now cached
    assert len(cache.items) == 1
    with pytest.raises(InvalidInputError, match="depth is 80x60 but camera_info says 160x120"):
        check_frame(rgb, depth[::2, ::2], info, cache)
    with pytest.raises(InvalidInputError, match="image is 80x120"):
        check_frame(rgb[:, :80], None, info, cache)
    info.distortion_model = "kannala_brandt"
    with pytest.raises(InvalidInputError, match="'kannala_brandt' is not supported"):
        check_frame(rgb, None, info, cache)
    with pytest.raises(InvalidInputError, match="P with fx, fy > 0"):  # P unset
        check_frame(rgb, None, info, cache, image_rectified=True)
    info.p = [100.0, 0.0, 80.0, 0.0, 0.0, 100.0, 60.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    check_frame(rgb, None, info, cache, image_rectified=True)  # any lens: P describes it
    info.width = 0
    with pytest.raises(InvalidInputError, match="image is 160x120 but camera_info says 0x120"):
        check_frame(rgb, None, info, cache, image_rectified=True)
