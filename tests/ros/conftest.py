"""ROS test fixtures: nodes in their own OS processes, a trained tiny memory, a client node."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")


class NodeProcess:
    """``python -m m3_ros.<module>`` with a params YAML; output kept for failure messages."""

    def __init__(self, module: str, node_name: str, params: dict, tmp: Path) -> None:
        pfile = tmp / f"{node_name}_params.yaml"
        pfile.write_text(yaml.safe_dump({node_name: {"ros__parameters": params}}))
        self.log = tmp / f"{node_name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"m3_ros.{module}", "--ros-args", "--params-file", str(pfile)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"},
        )

    def output(self) -> str:
        return self.log.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def spawn(tmp_path):
    procs: list[NodeProcess] = []

    def start(module: str, params: dict, node_name: str | None = None) -> NodeProcess:
        p = NodeProcess(module, node_name or module, params, tmp_path)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


class Client:
    """A node in the test process, spun by a background executor thread."""

    def __init__(self, context) -> None:
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node

        self.node = Node("test_client", context=context)
        self.executor = MultiThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        from m3_ros.node_utils import CLIENT_DEPTH, service_qos

        client = self.node.create_client(srv_type, name, qos_profile=service_qos(CLIENT_DEPTH))
        assert client.wait_for_service(timeout_sec=timeout), f"no service {name}"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), f"{name} did not answer within {timeout} s"
        return future.result()

    def collect(self, msg_type, topic: str, qos=10) -> list:
        got: list = []
        self.node.create_subscription(msg_type, topic, got.append, qos)
        return got

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def client(ros_context):
    c = Client(ros_context)
    yield c
    c.close()


def trainer_params(tmp_path: Path, **over) -> dict:
    """A CPU trainer node's parameters for the tests: recordings in tmp_path/trainer_rec,
    memories in tmp_path/mem, label features, 80x60 images; ``over`` adds or replaces."""
    return {
        "recordings_dir": str(tmp_path / "trainer_rec"),
        "memories_dir": str(tmp_path / "mem"),
        "features": ["labels"],
        "device": "cpu",
        "max_image_size": [80, 60],
        **over,
    }


def wait_for(predicate, timeout: float, what: str, proc: NodeProcess | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    detail = f"\n--- node output ---\n{proc.output()[-3000:]}" if proc else ""
    raise AssertionError(f"timed out waiting for {what}{detail}")


@pytest.fixture(scope="session")
def trained_memory(tmp_path_factory):
    """A memory trained on the synthetic room with its per-pixel label features."""
    from m3_core.data import load_dataset, make_synthetic_scene
    from m3_core.train import Trainer
    from tests.fixtures.training import tiny_config

    root = tmp_path_factory.mktemp("ros_memory")
    make_synthetic_scene(root / "scene", num_frames=24, width=80, height=60, feature_stride=4)
    cfg = tiny_config(iterations=200, init_points=4000, refine_every=50)
    Trainer(load_dataset(root / "scene"), cfg, root / "memory").run()
    return root / "memory", root / "scene"
