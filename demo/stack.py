"""The m3_ros nodes of the demo, each in its own OS process (as ``m3-bringup`` starts them).

Parameters are the project's ``config/m3_params.yaml`` with the demo's overrides, written to
``OUT/params.yaml``; each node logs to ``OUT/logs/<node>.log``. ROS isolation (loopback-only
discovery, a per-run domain id unless ``ROS_DOMAIN_ID`` is set, logs under OUT) is put into
``os.environ`` by :func:`isolate_ros` before rclpy is imported, and inherited by the nodes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "config" / "m3_params.yaml"
NODE_ORDER = ("memory_server", "trainer", "collector", "nav_bridge")


def isolate_ros(log_dir: Path) -> None:
    """Environment for a private ROS graph on this host (call before importing rclpy)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 215)))
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ["ROS_LOG_DIR"] = str(log_dir)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONUNBUFFERED"] = "1"
    os.environ["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"


def write_params(path: Path, overrides: dict[str, dict]) -> Path:
    """config/m3_params.yaml with ``{node: {param: value}}`` overrides, written to ``path``."""
    params = yaml.safe_load(PARAMS_FILE.read_text())
    for node, over in overrides.items():
        params.setdefault(node, {"ros__parameters": {}})["ros__parameters"].update(over)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


class NodeStack:
    """Start / check / stop the demo's nodes (``python -m m3_ros.<node>``)."""

    def __init__(self, params_file: Path, log_dir: Path, nodes=NODE_ORDER) -> None:
        self.params_file, self.log_dir, self.nodes = params_file, log_dir, tuple(nodes)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in self.nodes:
            cmd = [sys.executable, "-m", f"m3_ros.{name}", "--ros-args"]
            cmd += ["--params-file", str(self.params_file)]
            log = (self.log_dir / f"{name}.log").open("w")
            self.procs[name] = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ)
            )

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def tail(self, name: str, chars: int = 2000) -> str:
        try:
            return self.log(name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def dead(self) -> list[str]:
        """Nodes that have exited."""
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, timeout: float = 15.0) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
