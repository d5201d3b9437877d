"""The whole product as separate processes: a simulated walk is published -> the collector
keeps keyframes and streams them -> the trainer (no shared filesystem) trains via the
TrainMemory action -> the memory server loads the memory -> grounding -> the nav bridge
publishes a goal. Also: the collector writes a valid dataset from published messages."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from tests.ros.conftest import trainer_params, wait_for

pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from m3_core.data import load_dataset, make_synthetic_scene  # noqa: E402
from m3_core.types import pose_matrix  # noqa: E402
from m3_ros import convert  # noqa: E402
from m3_ros.collector import PARAMS as COLLECTOR_DEFAULTS  # noqa: E402
from m3_ros.srv import GroundObject  # noqa: E402

EXT = COLLECTOR_DEFAULTS["camera_extrinsic"]
BASE_TO_CAM = pose_matrix(EXT[:3], EXT[3:])


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    root = tmp_path_factory.mktemp("walk") / "scene"
    make_synthetic_scene(root, num_frames=24, width=80, height=60, feature_stride=4)
    return load_dataset(root)


def publish_walk(
    client,
    walk,
    period: float = 0.1,
    frames: range | None = None,
    truncate: int = -1,
    distortion: list[float] | None = None,
) -> None:
    """Each frame as a robot publishes it: image, camera info, odometry (base pose); frame
    ``truncate`` gets an image whose data is cut short (a corrupt message); ``distortion``
    (plumb_bob, P unset) makes the camera info describe a wide-angle lens."""
    qos = 10
    pub_img = client.node.create_publisher(Image, "/camera/image_raw", qos)
    pub_info = client.node.create_publisher(CameraInfo, "/camera/camera_info", qos)
    pub_odom = client.node.create_publisher(Odometry, "/odom", qos)
    pub_depth = client.node.create_publisher(Image, "/camera/depth", qos)
    wait_for(lambda: pub_img.get_subscription_count() > 0, 30, "collector subscriptions")
    time.sleep(0.5)
    for k in frames or range(len(walk.frames)):
        frame = walk.frames[k]
        stamp = client.node.get_clock().now().to_msg()
        rgb = (walk.load_image(k).numpy() * 255).round().astype(np.uint8)
        img = convert.array_to_image(rgb, "rgb8")
        if k == truncate:
            img.data = img.data[: len(img.data) // 2]
        depth = convert.array_to_image(walk.load_depth(k).numpy().astype(np.float32), "32FC1")
        info = convert.camera_info_msg(frame.camera)
        if distortion:
            info.d, info.p = distortion, [0.0] * 12
        odom = Odometry()
        base = frame.camera.c2w.double() @ torch.linalg.inv(BASE_TO_CAM)
        odom.pose.pose = convert.matrix_to_pose_msg(base)
        for msg in (img, info, odom, depth):
            msg.header.stamp = stamp
            msg.header.frame_id = "odom" if msg is odom else "camera"
        pub_odom.publish(odom)
        pub_info.publish(info)
        pub_depth.publish(depth)
        pub_img.publish(img)
        time.sleep(period)


def match_walk_frame(walk, c2w: torch.Tensor) -> int:
    """Index of the walk frame with this camera pose (frames may be dropped on the way)."""
    errs = [float((f.camera.c2w - c2w).abs().max()) for f in walk.frames]
    k = int(np.argmin(errs))
    assert errs[k] < 1e-4, f"recorded pose matches no published frame (error {errs[k]})"
    return k


def frame_count(root) -> int:
    f = root / "transforms.json"
    return len(json.loads(f.read_text())["frames"]) if f.exists() else 0


COLLECT = {
    "recording_id": "walk",
    "depth_topic": "/camera/depth",
    "min_translation": 0.0,
    "min_rotation_deg": 0.0,
    "blur_ratio": 0.0,
    "shared_filesystem": False,
    "min_keyframes": 10,
}


def test_collector_writes_a_valid_dataset_and_reports_its_counts(walk, spawn, client, tmp_path):
    from m3_ros.msg import CollectorStatus

    out = tmp_path / "rec"
    collector = spawn("collector", {**COLLECT, "output_dir": str(out)})
    status = client.collect(CollectorStatus, "/collector/status")
    n = len(walk.frames)
    publish_walk(client, walk, truncate=n - 1)  # the last image is corrupt: rejected, logged
    want = {
        "images_received": n,
        "frames_paired": n,
        "frames_pending": 0,
        "frames_unpaired": 0,
        "frames_rejected": 1,
        "keyframes_selected": n - 1,
        "keyframes_queued": 0,
        "keyframes_dropped": 0,
        "keyframes": n - 1,
    }

    def counts() -> dict:
        return {k: getattr(status[-1], k) for k in want} if status else {}

    deadline = time.monotonic() + 30
    while counts() != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counts() == want, collector.output()[-3000:]
    assert frame_count(out / "walk") == n - 1
    where = str((out / "walk").resolve())
    assert (status[-1].recording_id, status[-1].dataset_path) == ("walk", where)
    assert "skipped a frame" in collector.output()
    rec = load_dataset(out / "walk")
    for k, frame in enumerate(rec.frames):
        torch.testing.assert_close(frame.camera.c2w, walk.frames[k].camera.c2w, atol=1e-5, rtol=0)
        assert (frame.camera.fx, frame.camera.width) == (walk.frames[k].camera.fx, 80)
        torch.testing.assert_close(rec.load_image(k), walk.load_image(k), atol=1 / 255, rtol=0)


def test_collector_undistorts_a_wide_angle_camera(walk, spawn, client, tmp_path):
    """The keyframes on disk are the images undistorted with their camera info (the
    Rectifier itself is checked against OpenCV's projection in tests/core/data)."""
    from m3_core.data.undistort import Rectifier

    d = [-0.25, 0.07, 0.0, 0.0, 0.0]
    out = tmp_path / "rec"
    collector = spawn("collector", {**COLLECT, "output_dir": str(out)})
    publish_walk(client, walk, frames=range(4), distortion=d)
    wait_for(lambda: frame_count(out / "walk") == 4, 30, "4 keyframes", collector)
    info = convert.camera_info_msg(walk.frames[0].camera)
    info.d, info.p = d, [0.0] * 12
    rect = Rectifier(convert.lens_model(info))
    rec = load_dataset(out / "walk")
    for k, frame in enumerate(rec.frames):
        raw = (walk.load_image(k).numpy() * 255).round().astype(np.uint8)
        want = torch.from_numpy(rect.rgb(raw)).float() / 255
        torch.testing.assert_close(rec.load_image(k), want, atol=0, rtol=0)
        cam = frame.camera
        assert (cam.fx, cam.fy, cam.cx, cam.cy) == pytest.approx(
            (rect.new_k[0, 0], rect.new_k[1, 1], rect.new_k[0, 2], rect.new_k[1, 2])
        )
        assert cam.fx < walk.frames[k].camera.fx  # barrel lens: a wider pinhole view
        torch.testing.assert_close(cam.c2w, walk.frames[k].camera.c2w, atol=1e-5, rtol=0)


def copy_label_features(walk, received) -> None:
    """Bring-your-own features: the walk's per-pixel label features for each received frame."""
    features = received / "features" / "labels"
    features.mkdir(parents=True, exist_ok=True)
    shutil.copy(walk.root / "features" / "labels" / "vocabulary.npz", features)
    shutil.copy(walk.root / "features" / "labels" / "meta.json", features)
    for f in load_dataset(received).frames:
        k = match_walk_frame(walk, f.camera.c2w)
        src = walk.root / "features" / "labels" / f"{walk.frames[k].name}.npy"
        shutil.copy(src, features / f"{f.name}.npy")


def test_full_loop_walk_to_goal(walk, spawn, client, tmp_path):
    """Walk part of the room, train, ground, go; walk on, and the memory grows."""
    from m3_core.errors import CheckpointError
    from m3_core.memory.archive import memory_digest

    # no shared filesystem anywhere: keyframes and the memory travel over DDS
    server_dir = tmp_path / "server_memories"
    server = spawn("memory_server", {"memories_dir": str(server_dir), "shared_filesystem": False})
    trainer = spawn("trainer", trainer_params(tmp_path, iterations=200))
    collector = spawn("collector", {**COLLECT, "output_dir": str(tmp_path / "collector_rec")})
    bridge = spawn("nav_bridge", {"standoff_distance": 0.7})
    goals = client.collect(PoseStamped, "/goal_pose")
    publish_walk(client, walk, frames=range(16))
    received = tmp_path / "trainer_rec" / "walk"
    collected = tmp_path / "collector_rec" / "walk"
    wait_for(lambda: frame_count(collected) >= 13, 60, "keyframes")
    time.sleep(1.0)
    wait_for(lambda: frame_count(received) == frame_count(collected), 60, "the stream", trainer)
    copy_label_features(walk, received)
    res = client.call(Trigger, "/collector/start_training", Trigger.Request())
    assert res.success, res.message

    def grounded():
        r = client.call(
            GroundObject, "/memory_server/ground_object", GroundObject.Request(text="table")
        )
        return r.success and r.objects and r.objects[0].center.header.frame_id == "odom"

    wait_for(grounded, 600, "the memory server to answer from the new memory", trainer)
    assert [p.name for p in server_dir.iterdir()] == ["walk"]  # the unpacked copy
    cmd = client.node.create_publisher(String, "/nav_bridge/command", 10)
    wait_for(lambda: cmd.get_subscription_count() > 0, 30, "nav bridge", bridge)
    cmd.publish(String(data="table"))
    wait_for(lambda: goals, 60, "a navigation goal", bridge)
    table = next(
        o
        for o in json.loads((walk.root / "objects.json").read_text())["objects"]
        if o["label"] == "table"
    )
    assert goals[0].header.frame_id == "odom"  # the frame the walk was recorded in
    g = goals[0].pose.position
    dist = np.hypot(g.x - table["center"][0], g.y - table["center"][1])
    half_diag = np.hypot(*table["size"][:2]) / 2
    assert half_diag + 0.7 - 0.35 < dist < half_diag + 0.7 + 0.35, dist

    # the robot walks on: the same recording grows, and training again updates the memory
    first = memory_digest(server_dir / "walk")
    seen = set(json.loads((server_dir / "walk" / "memory.json").read_text())["extra"]["frames"])
    n_before = frame_count(collected)
    publish_walk(client, walk, frames=range(16, 24))
    wait_for(lambda: frame_count(collected) >= n_before + 6, 60, "more keyframes")
    time.sleep(1.0)
    wait_for(lambda: frame_count(received) == frame_count(collected), 60, "the stream", trainer)
    copy_label_features(walk, received)
    res = client.call(Trigger, "/collector/start_training", Trigger.Request())
    assert res.success, res.message

    def grown() -> bool:
        try:
            return memory_digest(server_dir / "walk") != first
        except CheckpointError:  # caught between the two renames of the swap
            return False

    wait_for(grown, 600, "the grown memory", trainer)
    meta = json.loads((server_dir / "walk" / "memory.json").read_text())
    assert seen < set(meta["extra"]["frames"])  # grown with the new frames, not retrained
    assert meta["extra"]["last_growth"]["new_frames"] > 0
    assert grounded() and server.alive() and trainer.alive()
    done = "training finished: trained"
    wait_for(lambda: done in collector.output(), 30, "the training result", collector)
