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


@pytest.mark.skipif(HAVE_TF, reason="tf2_ros is installed")
def test_tf_without_tf2_is_one_readable_line():
    params = {"pose_source": "tf"}
    res = subprocess.run(
        [sys.executable, "-m", "m3_ros.collector", "--ros-args"]
        + [a for k, v in params.items() for a in ("-p", f"{k}:={v}")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: pose_source 'tf' needs tf2_ros")
    assert "Traceback" not in res.stderr


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
