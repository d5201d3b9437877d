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
    from m3_ros.nodes import params_yaml

    assert PARAMS.read_text() == params_yaml(), "regenerate: python -m m3_ros.nodes > config/..."
    doc = yaml.safe_load(PARAMS.read_text())
    assert list(doc) == list(NODES)
    for name in NODES:
        assert doc[name]["ros__parameters"] == node_params(name), name


def test_rviz_config_shows_the_servers_topics():
    doc = yaml.safe_load((REPO / "config" / "m3.rviz").read_text())
    topics = {
        d["Topic"]["Value"]
        for d in doc["Visualization Manager"]["Displays"]
        if isinstance(d.get("Topic"), dict)
    }
    server = (REPO / "m3_ros" / "memory_server.py").read_text()
    for topic in ("/memory_server/gaussians", "/memory_server/grounded_markers"):
        assert topic in topics and f'"~/{topic.rsplit("/", 1)[1]}"' in server
    assert doc["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"


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
    log = tmp_path / "bringup.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "m3_ros.bringup",
                "--params-file",
                str(bad),
                "--nodes",
                "memory_server,nav_bridge",
            ],
            stderr=subprocess.STDOUT,
            stdout=out,
            text=True,
        )
        deadline = time.monotonic() + 90
        while "restart in" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(2)
        proc.wait(timeout=30)
    err = log.read_text()
    assert proc.returncode == 0
    assert "nav_bridge exited" in err and "restart in" in err
    assert "memory_server exited" not in err
