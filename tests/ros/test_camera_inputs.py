"""The collector's inputs: pose from tf2 (stand-in buffer here), backend choice, and the
builtin pairing against ``message_filters`` when that is importable."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")
from geometry_msgs.msg import TransformStamped  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from m3_core.errors import InvalidInputError  # noqa: E402
from m3_core.types import Camera, pose_matrix  # noqa: E402
from m3_ros import convert  # noqa: E402
from m3_ros.camera_inputs import CameraInputs, TfPoses, sync_backend  # noqa: E402
from m3_ros.collector import PARAMS  # noqa: E402
from m3_ros.sync import NearestTimeSync  # noqa: E402

HAVE_MF = importlib.util.find_spec("message_filters") is not None
HAVE_TF = importlib.util.find_spec("tf2_ros") is not None
CAM_IN_MAP = pose_matrix([1.0, 2.0, 0.5], [0.5, -0.5, 0.5, -0.5])


class StandInBuffer:
    """tf2_ros.Buffer's lookup_transform for one edge map <- cam_optical, from t >= 10 s."""

    def __init__(self) -> None:
        self.calls: list = []

    def lookup_transform(self, target, source, time, timeout=None):
        self.calls.append((target, source, time.nanoseconds, timeout.nanoseconds))
        if (target, source) != ("map", "cam_optical") or time.nanoseconds < 10e9:
            raise LookupError(f"{target} <- {source} unknown at {time.nanoseconds}")
        tf = TransformStamped()
        p = convert.matrix_to_pose_msg(CAM_IN_MAP)
        tf.transform.translation.x, tf.transform.translation.y = p.position.x, p.position.y
        tf.transform.translation.z = p.position.z
        tf.transform.rotation = p.orientation
        return tf


def test_tf_lookup_gives_the_camera_pose_and_clear_errors():
    buf = StandInBuffer()
    poses = TfPoses(None, "map", 0.25, buffer=buf)
    stamp = Header().stamp
    stamp.sec = 12
    torch.testing.assert_close(poses.lookup("cam_optical", stamp), CAM_IN_MAP, atol=1e-9, rtol=0)
    assert buf.calls[-1] == ("map", "cam_optical", 12_000_000_000, 250_000_000)
    stamp.sec = 3
    with pytest.raises(InvalidInputError, match="no transform map <- cam_optical"):
        poses.lookup("cam_optical", stamp)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"pose_source": "tf"}, "error: pose_source 'tf' needs tf2_ros"),
        ({"pose_source": "gps"}, "error: pose_source must be topic or tf"),
        ({"sensor_qos": "fast"}, "error: sensor_qos must be best_effort or reliable"),
        ({"sync": "exact"}, "error: sync must be auto, message_filters or builtin"),
        ({"status_period": 0.0}, "error: status_period must be > 0 s"),
    ],
)
def test_bad_collector_parameters_are_one_readable_line(params, message, tmp_path):
    if "tf2_ros" in message and HAVE_TF:
        pytest.skip("tf2_ros is installed")
    res = subprocess.run(
        [sys.executable, "-m", "m3_ros.collector", "--ros-args"]
        + ["-p", f"output_dir:={tmp_path}"]
        + [a for k, v in params.items() for a in ("-p", f"{k}:={v}")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in res.stderr
    assert not any(tmp_path.iterdir())  # nothing recorded, nothing created


def test_sync_backend_choice():
    assert sync_backend("builtin") == "builtin"
    assert sync_backend("auto") == ("message_filters" if HAVE_MF else "builtin")
    with pytest.raises(InvalidInputError, match="auto, message_filters or builtin"):
        sync_backend("exact")
    if not HAVE_MF:
        with pytest.raises(InvalidInputError, match="needs a ROS 2 install"):
            sync_backend("message_filters")


def test_tf_pose_source_pairs_images_over_dds(ros_context):
    """Image + camera info published by another node; the pose comes from the TF buffer at
    the image time (frames before the transform exists are skipped, not fatal)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("inputs_under_test", context=ros_context)
    robot = Node("robot", context=ros_context)
    overrides = {"pose_source": "tf", "sync": "builtin", "camera_info_topic": "/cam/info"}
    params = {**PARAMS, **overrides, "image_topic": "/cam/image"}
    got: list = []
    tf = TfPoses(node, "map", 0.1, buffer=StandInBuffer())
    CameraInputs(node, params.__getitem__, lambda *a: got.append(a), tf=tf)
    pub_img = robot.create_publisher(Image, "/cam/image", 10)
    pub_info = robot.create_publisher(CameraInfo, "/cam/info", 10)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    ex.add_node(robot)
    deadline = time.monotonic() + 20
    while pub_img.get_subscription_count() == 0 and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.05)
    cam = Camera(50.0, 50.0, 16.0, 12.0, 32, 24, torch.eye(4, dtype=torch.float64))
    for sec in (5, 11, 12, 13):  # t=5 s: no transform yet -> skipped
        img = convert.array_to_image(np.zeros((24, 32, 3), np.uint8), "rgb8")
        info = convert.camera_info_msg(cam)
        for m in (img, info):
            m.header.stamp.sec, m.header.frame_id = sec, "cam_optical"
        pub_info.publish(info)
        pub_img.publish(img)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
    assert [a[0].header.stamp.sec for a in got] == [11, 12, 13]
    for _image, info, depth, c2w, world in got:
        assert depth is None and world == "map" and info.width == 32
        torch.testing.assert_close(c2w, CAM_IN_MAP, atol=1e-9, rtol=0)
    ex.shutdown()


@pytest.mark.skipif(not HAVE_MF, reason="message_filters is not installed")
def test_builtin_pairing_matches_message_filters():
    """The same jittered streams through both: the same image/pose pairs."""
    import message_filters as mf

    rng = np.random.default_rng(0)
    images = [(1.0 + 0.1 * k + rng.uniform(-0.004, 0.004), f"img{k}") for k in range(40)]
    poses = [(1.0 + 0.1 * k + rng.uniform(-0.02, 0.02), f"pose{k}") for k in range(40)]
    ours: list = []
    sync = NearestTimeSync(["pose"], lambda t, i, p: ours.append((i, p)), slop=0.03)
    theirs: list = []
    fi, fp = mf.SimpleFilter(), mf.SimpleFilter()
    ats = mf.ApproximateTimeSynchronizer([fi, fp], 10, 0.03)
    ats.registerCallback(lambda i, p: theirs.append((i.frame_id, p.frame_id)))
    events = sorted([(t, "i", n) for t, n in images] + [(t, "p", n) for t, n in poses])
    for t, kind, name in events:
        header = Header(frame_id=name)
        header.stamp.sec, header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
        if kind == "i":
            sync.add_primary(t, name)
            fi.signalMessage(_Stamped(header))
        else:
            sync.add("pose", t, name)
            fp.signalMessage(_Stamped(header))
    sync.add("pose", events[-1][0] + 1.0, "end")  # settles the last image (theirs is eager)
    assert len(theirs) >= 35 and theirs == ours


class _Stamped:
    def __init__(self, header) -> None:
        self.header = header

    @property
    def frame_id(self) -> str:
        return self.header.frame_id


@pytest.mark.skipif(not HAVE_TF, reason="tf2_ros is not installed (runs on a ROS 2 install)")
def test_collector_takes_camera_poses_from_tf(spawn, client, tmp_path):
    """A robot broadcasting map -> base_link (moving) and base_link -> cam_optical (static):
    the collector's keyframes carry map <- cam_optical at each image's time."""
    import tf2_ros

    from m3_core.data import load_dataset
    from tests.ros.conftest import wait_for

    base_to_cam = pose_matrix([0.2, 0.0, 0.4], [-0.5, 0.5, -0.5, 0.5])
    collector = spawn(
        "collector",
        {
            "pose_source": "tf",
            "image_topic": "/cam/image",
            "camera_info_topic": "/cam/info",
            "output_dir": str(tmp_path),
            "recording_id": "tf_walk",
            "min_translation": 0.0,
            "min_rotation_deg": 0.0,
            "blur_ratio": 0.0,
        },
    )

    def tf_msg(parent: str, child: str, m: torch.Tensor, stamp) -> TransformStamped:
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id, t.header.stamp = parent, child, stamp
        p = convert.matrix_to_pose_msg(m)
        t.transform.translation.x, t.transform.translation.y = p.position.x, p.position.y
        t.transform.translation.z = p.position.z
        t.transform.rotation = p.orientation
        return t

    static = tf2_ros.StaticTransformBroadcaster(client.node)
    moving = tf2_ros.TransformBroadcaster(client.node)
    now = client.node.get_clock().now().to_msg()
    static.sendTransform(tf_msg("base_link", "cam_optical", base_to_cam, now))
    pub_img = client.node.create_publisher(Image, "/cam/image", 10)
    pub_info = client.node.create_publisher(CameraInfo, "/cam/info", 10)
    wait_for(lambda: pub_img.get_subscription_count() > 0, 30, "collector", collector)
    time.sleep(1.0)
    cam = Camera(50.0, 50.0, 16.0, 12.0, 32, 24, torch.eye(4, dtype=torch.float64))
    rng = np.random.default_rng(0)
    bases = []
    for k in range(6):
        stamp = client.node.get_clock().now().to_msg()
        base = pose_matrix([0.3 * k, 0.1 * k, 0.0], [0.0, 0.0, np.sin(0.1 * k), np.cos(0.1 * k)])
        bases.append(base)
        moving.sendTransform(tf_msg("map", "base_link", base, stamp))
        rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        img, info = convert.array_to_image(rgb, "rgb8"), convert.camera_info_msg(cam)
        for m in (img, info):
            m.header.stamp, m.header.frame_id = stamp, "cam_optical"
        pub_info.publish(info)
        pub_img.publish(img)
        time.sleep(0.3)
    root = tmp_path / "tf_walk"
    wait_for(lambda: (root / "transforms.json").exists(), 30, "a keyframe", collector)
    wait_for(lambda: len(load_dataset(root).frames) == 6, 30, "6 keyframes", collector)
    for frame, base in zip(load_dataset(root).frames, bases):
        expect = base @ base_to_cam
        torch.testing.assert_close(frame.camera.c2w.double(), expect, atol=1e-5, rtol=0)
    assert collector.alive()


def test_unpaired_images_are_counted_and_logged(spawn, client, tmp_path):
    """Images whose depth never comes: given up once a newer image is max_delay ahead,
    counted on ~/status and logged; the newest one is still pending."""
    from nav_msgs.msg import Odometry

    from m3_ros.msg import CollectorStatus
    from tests.ros.conftest import wait_for

    params = {"output_dir": str(tmp_path / "rec"), "depth_topic": "/cam/depth", "max_delay": 0.5}
    params["sync"] = "builtin"  # message_filters does not say what it still holds
    collector = spawn("collector", params)
    status = client.collect(CollectorStatus, "/collector/status")
    pubs = {
        "image": client.node.create_publisher(Image, "/camera/image_raw", 10),
        "info": client.node.create_publisher(CameraInfo, "/camera/camera_info", 10),
        "odom": client.node.create_publisher(Odometry, "/odom", 10),
    }
    wait_for(lambda: all(p.get_subscription_count() for p in pubs.values()), 30, "collector")
    time.sleep(1.0)
    cam = Camera(50.0, 50.0, 16.0, 12.0, 32, 24, torch.eye(4, dtype=torch.float64))
    for sec in (100, 101, 102):  # a second apart: each newer image is past max_delay
        msgs = {
            "image": convert.array_to_image(np.zeros((24, 32, 3), np.uint8), "rgb8"),
            "info": convert.camera_info_msg(cam),
            "odom": Odometry(),
        }
        msgs["odom"].pose.pose.orientation.w = 1.0
        for key in ("odom", "info", "image"):
            msgs[key].header.stamp.sec = sec
            pubs[key].publish(msgs[key])
        time.sleep(0.2)

    def counts():
        s = status[-1] if status else None
        return s and (s.images_received, s.frames_paired, s.frames_unpaired, s.frames_pending)

    wait_for(lambda: counts() == (3, 0, 2, 1), 30, f"counts (got {counts()})", collector)
    wait_for(lambda: "left unpaired (2 in all)" in collector.output(), 10, "the warning")
