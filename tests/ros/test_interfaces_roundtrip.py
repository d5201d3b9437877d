"""The project's own service between two OS processes over loopback DDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402

from m3_ros.srv import GroundObject  # noqa: E402


def test_ground_object_roundtrip_between_processes(ros_context):
    server = subprocess.Popen(
        [sys.executable, str(FIXTURES / "ground_echo_server.py")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout.readline().strip() == "READY"
        node = Node("roundtrip_client", context=ros_context)
        client = node.create_client(GroundObject, "ground_object")
        assert client.wait_for_service(timeout_sec=20.0), "service never appeared"
        executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        future = client.call_async(GroundObject.Request(text="red backpack", min_score=0.5))
        executor.spin_until_future_complete(future, timeout_sec=20.0)
        res = future.result()
        assert res is not None and res.success
        assert len(res.objects) == 1
        obj = res.objects[0]
        assert obj.label == "red backpack"
        assert obj.score == pytest.approx(0.75)
        assert obj.center.header.frame_id == "map"
        assert obj.center.pose.position.x == pytest.approx(len("red backpack"))
        assert (obj.size.x, obj.size.y, obj.size.z) == (0.5, 0.25, 1.0)
        assert obj.num_gaussians == 7
        node.destroy_node()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
