"""The launch file, the YAML, the pip-route runner and the nodes agree."""

from __future__ import annotations

import ast
import subprocess
import sys
import time

import pytest
import yaml

from m3_ros.nodes import NODES, node_params
from tests.conftest import REPO

LAUNCH = REPO / "launch" / "memory.launch.py"
PARAMS = REPO / "config" / "m3_params.yaml"


def launch_node_table() -> dict:
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "NODES":
            return ast.literal_eval(node.value)
    raise AssertionError("launch file has no NODES table")


def test_launch_file_starts_every_package_node():
    assert list(launch_node_table()) == list(NODES)
    text = LAUNCH.read_text()
    for needed in ("params_file", "memory_path", "use_sim_time", "respawn=True"):
        assert needed in text


def test_yaml_matches_declared_parameters():
    doc = yaml.safe_load(PARAMS.read_text())
    assert list(doc) == list(NODES)
    for name in NODES:
        assert doc[name]["ros__parameters"] == node_params(name), name


def test_cmake_installs_an_executable_per_node():
    cmake = (REPO / "CMakeLists.txt").read_text()
    line = next(ln for ln in cmake.splitlines() if ln.strip().startswith("foreach(node"))
    assert set(NODES) <= set(line.replace(")", " ").split())


def test_launch_description_builds_when_launch_ros_is_installed():
    pytest.importorskip("launch_ros")
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    desc = module.generate_launch_description()
    names = [a.name for a in desc.entities if hasattr(a, "name") and hasattr(a, "default_value")]
    assert {"params_file", "memory_path", "use_sim_time", *NODES} <= set(names)


def test_bringup_rejects_unknown_nodes_with_one_line():
    res = subprocess.run(
        [sys.executable, "-m", "m3_ros.bringup", "--nodes", "nope"], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["m3-bringup: error: unknown nodes ['nope']"]


def test_bringup_restarts_a_crashed_node(tmp_path):
    """nav_bridge with an invalid parameter type crashes at start; bringup restarts it and
    keeps the memory server running, then stops everything on SIGINT."""
    bad = tmp_path / "params.yaml"
    doc = yaml.safe_load(PARAMS.read_text())
    doc["nav_bridge"]["ros__parameters"]["standoff_distance"] = "not a number"
    bad.write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen(
        [sys.executable, "-m", "m3_ros.bringup", "--params-file", str(bad),
         "--nodes", "memory_server,nav_bridge"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(12)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "nav_bridge exited" in err and "restart in" in err
    assert "memory_server exited" not in err
