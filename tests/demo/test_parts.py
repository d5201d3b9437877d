"""Unit tests of the demo's parts: scene geometry, photo recognition, bag round trip and
replay, the PCA picture, grounding scores, output-folder handling."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from demo import scene
from demo.report import pca_rgb
from demo.run import prepare_out, score_grounding
from m3_core.errors import InvalidInputError


@pytest.fixture(scope="module")
def frames():
    from demo.sim_robot import render_walk

    return render_walk(3, 64, 48)


def test_odometry_plus_collector_extrinsic_gives_the_camera_pose():
    pytest.importorskip("rclpy")
    from m3_ros.collector import PARAMS

    assert list(scene.CAMERA_EXTRINSIC) == PARAMS["camera_extrinsic"]
    for c2w in scene.walk_poses(5):
        back = scene.base_pose(c2w) @ scene.base_to_camera()
        torch.testing.assert_close(back, c2w.double(), atol=1e-6, rtol=0)
        assert abs(float(c2w[2, 3]) - 0.5) < 0.05  # quadruped head height


def test_textures_are_upright_photos():
    img = scene.photo("camera")
    assert img.shape == (512, 512, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(scene.texture("camera")[::-1], img)
    with pytest.raises(InvalidInputError):
        scene.photo("no_such_sample")


def test_objects_stand_in_the_room_and_are_seen(frames):
    objs = scene.demo_objects()
    assert len(objs) >= 3 and scene.ABSENT_QUERY not in [o.label for o in objs]
    for o in objs:
        assert o.center[2] - o.size[2] / 2 == pytest.approx(0.0)  # on the floor
    seen = set()
    for c2w in scene.walk_poses(24):
        _, _, inst = scene.render(scene.camera(c2w, 64, 48), objs)
        seen |= {int(i) - 4 for i in np.unique(inst) if i >= 4}
    assert seen == set(range(len(objs)))


def test_effnet_recognises_every_photo():
    """The premise of the demo: effnet's top-1 class of each photo is the object's label."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from m3_core.extractors import create_extractor

    ex = create_extractor("effnet", device="cpu")
    for o in scene.PHOTO_OBJECTS:
        x = torch.from_numpy(scene.photo(o.sample)).float().permute(2, 0, 1)[None] / 255
        x = torch.nn.functional.interpolate(x, size=(96, 96 * x.shape[3] // x.shape[2]),
                                            mode="area")  # fmt: skip
        top = int(ex.classify(x)[0].argmax())
        assert ex.classes[top] == o.label, (o.sample, ex.classes[top])


def test_bag_round_trip_matches_the_published_messages(frames, tmp_path):
    pytest.importorskip("rclpy")
    from demo import bag
    from demo.sim_robot import walk_messages
    from m3_ros import convert

    t0 = 1_700_000_000_123_456_789
    sent = list(walk_messages(frames, 10.0, t0))
    assert bag.write_bag(tmp_path / "walk", iter(sent)) == 3
    got = list(bag.read_bag(tmp_path / "walk"))
    assert [t for t, _ in got] == [t0, t0 + 100_000_000, t0 + 200_000_000]
    for (t, a), (_, b), f in zip(sent, got, frames, strict=True):
        assert sorted(b) == ["depth", "image", "info", "odom"]
        for key in a:
            assert a[key] == b[key], key  # rclpy messages compare field by field
        np.testing.assert_array_equal(convert.image_to_rgb(b["image"]), f.rgb)
        np.testing.assert_array_equal(convert.depth_to_metres(b["depth"]), f.depth)
        torch.testing.assert_close(convert.pose_to_matrix(b["odom"].pose.pose), f.base,
                                   atol=1e-6, rtol=0)  # quaternion round trip  # fmt: skip
        assert b["odom"].header.stamp.nanosec == t % 1_000_000_000
    # rewriting replaces the bag; a folder that is not a bag is refused and left alone
    assert bag.write_bag(tmp_path / "walk", iter(sent[:1])) == 1
    assert len(list(bag.read_bag(tmp_path / "walk"))) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(InvalidInputError):
        bag.write_bag(tmp_path / "other", iter(sent))
    assert (tmp_path / "other" / "keep.txt").read_text() == "x"
    with pytest.raises(InvalidInputError):
        list(bag.read_bag(tmp_path / "other"))


def test_replay_from_a_bag_publishes_every_frame_with_its_stamps(frames, tmp_path):
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import Image

    from demo import bag
    from demo.client import DemoClient
    from demo.sim_robot import WalkPublisher, replay, walk_messages

    t0 = 1_700_000_000_000_000_000
    bag.write_bag(tmp_path / "walk", walk_messages(frames, 20.0, t0))
    client = DemoClient()
    try:
        got = client.collect(Image, "/camera/image_raw")
        pub = WalkPublisher(client.node)
        deadline = time.monotonic() + 10
        while pub.subscribers() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert replay(pub, bag.read_bag(tmp_path / "walk")) == 3
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got]
    assert stamps == [t0, t0 + 50_000_000, t0 + 100_000_000]


def test_pca_rgb_matches_a_reference_pca():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    h, w, d = 12, 10, 16
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0].T  # [3, D] orthonormal
    coef = rng.standard_normal((h * w, 3)) * np.array([5.0, 2.0, 1.0])
    feats = (coef @ basis + 0.01 * rng.standard_normal((h * w, d))).reshape(h, w, d)
    mask = np.ones((h, w), bool)
    mask[0, :4] = False
    out = pca_rgb(feats.astype(np.float32), mask)
    assert out.shape == (h, w, 3) and out.min() >= 0 and out.max() <= 1
    assert (out[0, :4] == 0).all()
    ref = PCA(3).fit(feats[mask]).transform(feats.reshape(-1, d)).reshape(h, w, 3)
    for c in range(3):  # the same component, up to sign and the percentile clipping
        r = np.corrcoef(out[mask][:, c], ref[mask][:, c])[0, 1]
        assert abs(r) > 0.98, (c, r)
    np.testing.assert_array_equal(pca_rgb(feats.astype(np.float32), mask), out)  # deterministic
    assert (pca_rgb(feats, np.zeros((h, w), bool)) == 0).all()


def test_score_grounding_errors_hits_and_absent():
    truth = [{"label": "cat", "center": [1.0, 1.0, 0.3], "size": [1, 1, 1]},
             {"label": "cup", "center": [0.0, 0.0, 0.3], "size": [1, 1, 1]}]  # fmt: skip
    answers = [
        {"query": "cat", "present": True,
         "objects": [{"score": 0.9, "center": [1.0, 1.2, 0.3], "size": [1, 1, 1]}]},
        {"query": "cup", "present": True,
         "objects": [{"score": 0.4, "center": [0.0, 0.4, 0.9], "size": [1, 1, 1]}]},
        {"query": "piano", "present": False, "objects": []},
    ]  # fmt: skip
    answers[1]["objects"].append({"score": 0.3, "center": [2.0, 0.0, 0.3], "size": [1, 1, 1]})
    rows = score_grounding(answers, truth)
    assert rows[0]["error_m"] == pytest.approx(0.2) and rows[0]["to_box_m"] == 0.0
    assert rows[0]["hit"]  # inside the box
    assert rows[1]["error_m"] == pytest.approx(0.721) and rows[1]["error_xy_m"] == 0.4
    assert rows[1]["to_box_m"] == pytest.approx(0.1) and rows[1]["hit"]  # 0.1 m above it
    answers[1]["objects"] = answers[1]["objects"][::-1]  # the top answer is 1.5 m off the box
    assert score_grounding(answers, truth)[1]["to_box_m"] == pytest.approx(1.5)
    assert not score_grounding(answers, truth)[1]["hit"]
    assert rows[2]["correct"] and not rows[2]["answered"]
    answers[2]["objects"] = answers[0]["objects"]
    assert not score_grounding(answers, truth)[2]["correct"]


def test_prepare_out_cleans_demo_products_and_refuses_other_folders(tmp_path):
    out = tmp_path / "demo_out"
    prepare_out(out)
    (out / "memory").mkdir()
    (out / "memory" / "x").write_text("old")
    (out / "notes.txt").write_text("mine")
    prepare_out(out)
    assert not (out / "memory").exists() and (out / "notes.txt").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "data").write_text("keep")
    with pytest.raises(SystemExit):
        prepare_out(other)
    assert sorted(p.name for p in other.iterdir()) == ["data"]


def test_the_wide_lens_view_undistorts_back_to_the_render():
    """demo.lens resamples the pinhole render into a distorted view; undistorting it with the
    published K and d (the collector's Rectifier) must show, at each pixel, the render pixel
    on the same ray. The render here is a coordinate image (bilinear sampling of it is exact);
    tolerance 0.1 px: two remaps on OpenCV's 1/32 px grid and the curvature between them."""
    from demo import lens, scene
    from m3_core.data.undistort import LensModel, Rectifier

    render = scene.camera(torch.eye(4), 160, 120)
    k_raw = lens.raw_intrinsics(render)
    u, v = np.meshgrid(np.arange(160, dtype=np.float32), np.arange(120, dtype=np.float32))
    coords = np.stack([u, v], -1)  # [H, W, 2]: each render pixel holds its own (u, v)
    depth = np.full((120, 160), 2.5, np.float32)
    raw, raw_depth = lens.distort_view(coords, depth, render, k_raw)
    assert k_raw[0, 0] > render.fx and (raw_depth == 2.5).all()
    eye = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    rect = Rectifier(LensModel("plumb_bob", lens.WIDE, tuple(k_raw.ravel()), eye, (0.0,) * 12,
                               160, 120))  # fmt: skip
    back = rect.rgb(raw)
    vv, uu = np.mgrid[4:116:5, 4:156:5].reshape(2, -1)
    rays = np.linalg.inv(rect.new_k) @ np.stack([uu, vv, np.ones_like(uu)]).astype(np.float64)
    k_render = np.array([[render.fx, 0, render.cx], [0, render.fy, render.cy], [0, 0, 1]])
    want = (k_render @ rays)[:2] / (k_render @ rays)[2]
    np.testing.assert_allclose(back[vv, uu], want.T, atol=0.1, rtol=0)


def test_the_decision_after_training_is_not_a_live_snapshot_from_during_training():
    """demo2 printed "serving walk.live" while the trainer had chosen the trained memory: the
    live snapshot announced just before the goal was taken for the decision."""
    from demo.stages import decided

    goal, result = 100.0, 250.0
    live_before = [(99.0, "walk.live"), (100.4, "walk.live")]  # the last one after the goal
    assert decided(live_before, goal, result) is None  # nothing decided yet
    assert decided([*live_before, (251.0, "walk")], goal, result) == "walk"
    assert decided([*live_before, (251.0, "walk.live")], goal, result) == "walk.live"
    # without a live worker the trained memory may be announced before the result arrives
    assert decided([(249.5, "walk")], goal, result) == "walk"
