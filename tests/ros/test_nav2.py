"""The nav bridge's Nav2 path: a NavigateToPose goal to an action server in another process,
and the outcome reported on ~/status. Where nav2_msgs is not installed (a pip venv), a
stand-in package with Nav2's NavigateToPose definition (tests/fixtures/nav2_msgs_standin) is
built with CMake, as the project's own interfaces are."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.ros.conftest import wait_for

pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from m3_ros.msg import GroundedObject  # noqa: E402
from m3_ros.node_utils import latched_qos  # noqa: E402

# Succeeds the first goal, aborts the next with Nav2's TIMEOUT; prints each goal as JSON.
FAKE_NAV2 = """
import json, sys, rclpy
from rclpy.action import ActionServer
from rclpy.executors import ExternalShutdownException
from nav2_msgs.action import NavigateToPose
rclpy.init()
node = rclpy.create_node("fake_nav2")
count = 0
def execute(handle):
    global count
    count += 1
    p = handle.request.pose
    print(json.dumps({"frame": p.header.frame_id, "x": p.pose.position.x,
                      "y": p.pose.position.y, "qz": p.pose.orientation.z,
                      "qw": p.pose.orientation.w}), flush=True)
    res = NavigateToPose.Result()
    if count == 1:
        handle.succeed()
    else:
        res.error_code, res.error_msg = NavigateToPose.Result.TIMEOUT, "timeout"
        handle.abort()
    return res
ActionServer(node, NavigateToPose, "navigate_to_pose", execute)
try:
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
"""


@pytest.fixture(scope="session")
def nav2_env(tmp_path_factory) -> dict:
    """Environment additions under which nav2_msgs imports (none on a Nav2 install)."""
    if importlib.util.find_spec("nav2_msgs") is not None:
        return {}
    if shutil.which("cmake") is None:
        pytest.skip("cmake is needed to build the nav2_msgs stand-in")
    tmp, venv = tmp_path_factory.mktemp("nav2_msgs"), Path(sys.prefix)
    env = {
        **os.environ,
        "AMENT_PREFIX_PATH": str(venv),
        "PATH": f"{venv}/bin:{os.environ['PATH']}",
        "LD_LIBRARY_PATH": f"{venv}/lib",
    }
    src, build, prefix = REPO / "tests" / "fixtures" / "nav2_msgs_standin", tmp / "b", tmp / "i"
    for cmd in (
        ["cmake", "-S", str(src), "-B", str(build), "-DBUILD_TESTING=OFF"]
        + [f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DCMAKE_PREFIX_PATH={venv}"]
        + [f"-DPython3_EXECUTABLE={sys.executable}", "-DPython3_FIND_VIRTUALENV=ONLY"],
        ["cmake", "--build", str(build), "-j2"],
        ["cmake", "--install", str(build)],
    ):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return {"PYTHONPATH": str(site / "site-packages"), "LD_LIBRARY_PATH": str(prefix / "lib")}


def test_nav_bridge_sends_nav2_goals_and_reports_their_outcome(
    nav2_env, spawn, client, monkeypatch, tmp_path
):
    for key, value in nav2_env.items():  # inherited by the processes started below
        monkeypatch.setenv(key, os.pathsep.join(filter(None, [value, os.environ.get(key)])))
    log = tmp_path / "fake_nav2.log"
    with log.open("w") as out:
        nav2 = subprocess.Popen([sys.executable, "-c", FAKE_NAV2], stdout=out, stderr=out)
    try:
        topics = client.collect(PoseStamped, "/goal_pose")
        status = client.collect(String, "/nav_bridge/status", latched_qos(10))
        pub = client.node.create_publisher(GroundedObject, "/nav_bridge/target", 10)
        bridge = spawn("nav_bridge", {"standoff_distance": 0.5})
        wait_for(lambda: pub.get_subscription_count() > 0, 30, "nav_bridge", bridge)
        texts = lambda: [m.data for m in status]  # noqa: E731
        ready = "Nav2 navigate_to_pose is available"
        wait_for(lambda: ready in texts(), 60, "the bridge to discover Nav2", bridge)
        target = GroundedObject(label="crate", score=0.9)
        target.center.header.frame_id = "odom"
        target.center.pose.position.x, target.center.pose.orientation.w = 2.0, 1.0
        target.size.x = target.size.y = target.size.z = 0.5
        pub.publish(target)
        wait_for(lambda: "Nav2 reached the goal for 'crate'" in texts(), 30, "success", bridge)
        assert any("via Nav2 navigate_to_pose" in t for t in texts()), texts()
        goal = json.loads(log.read_text().splitlines()[0])
        assert goal["frame"] == "odom"
        radius = math.hypot(0.25, 0.25) + 0.5
        assert math.hypot(goal["x"] - 2.0, goal["y"]) == pytest.approx(radius, abs=1e-4)
        yaw = 2 * math.atan2(goal["qz"], goal["qw"])  # facing the object
        toward = math.atan2(-goal["y"], 2.0 - goal["x"])
        assert math.cos(yaw - toward) == pytest.approx(1.0, abs=1e-6)
        pub.publish(target)
        failed = "Nav2 failed the goal for 'crate': error 9003 timeout"
        wait_for(lambda: failed in texts(), 30, "the failure report", bridge)
        assert not topics  # Nav2 was there: nothing on /goal_pose
        assert bridge.alive()
    finally:
        nav2.send_signal(2)
        nav2.wait(timeout=30)
