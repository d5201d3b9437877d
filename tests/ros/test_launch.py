"""The launch file, the YAML, the pip-route runner and the nodes agree."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from m3_ros.nodes import NODES, node_params
from tests.conftest import REPO
from tests.ros.conftest import wait_for

LAUNCH = REPO / "launch" / "memory.launch.py"
HAVE_TF = importlib.util.find_spec("tf2_ros") is not None
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


def test_launch_description_builds_when_launch_ros_is_installed(monkeypatch, tmp_path):
    pytest.importorskip("launch_ros")
    # the share folder comes from the ament index (a pip venv has no AMENT_PREFIX_PATH)
    monkeypatch.setenv("AMENT_PREFIX_PATH", launch_env(tmp_path)["AMENT_PREFIX_PATH"])
    install_overlay(tmp_path / "install")
    spec = importlib.util.spec_from_file_location("memory_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    desc = module.generate_launch_description()
    names = [a.name for a in desc.entities if hasattr(a, "name") and hasattr(a, "default_value")]
    assert {"params_file", "robot", "memory_path", "use_sim_time", *NODES} <= set(names)


def test_bringup_rejects_unknown_nodes_with_one_line():
    res = subprocess.run(
        [sys.executable, "-m", "m3_ros.bringup", "--nodes", "nope"], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["m3-bringup: error: unknown nodes ['nope']"]


ROBOTS = sorted((REPO / "config" / "robots").glob("*.yaml"))


@pytest.mark.parametrize("profile", ROBOTS, ids=[f.stem for f in ROBOTS])
def test_robot_profiles_set_declared_parameters_with_their_types(profile):
    """An overlay naming an unknown node or parameter, or giving a value of another type than
    the declared default (ROS refuses 1 for a double), would fail only on the robot."""
    doc = yaml.safe_load(profile.read_text())
    assert doc and set(doc) <= set(NODES)
    for node, section in doc.items():
        declared = node_params(node)
        for key, value in section["ros__parameters"].items():
            assert key in declared, f"{profile.name}: {node} has no parameter {key}"
            assert type(value) is type(declared[key]), f"{profile.name}: {node}.{key}"


def test_bringup_robot_overlay_reaches_the_nodes(client, tmp_path):
    from m3_ros.bringup import robot_profiles

    assert {"spot", "go2"} <= set(robot_profiles())
    bad = subprocess.run(
        [sys.executable, "-m", "m3_ros.bringup", "--robot", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"m3-bringup: error: unknown robot 'nope': known robots are {', '.join(robot_profiles())}"
    ]
    cmd = [sys.executable, "-m", "m3_ros.bringup", "--robot", "spot", "--nodes", "collector"]
    log = tmp_path / "bringup.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*cmd, "--no-respawn"], cwd=tmp_path, stdout=out, stderr=out)
    try:
        if HAVE_TF:  # the collector runs with the profile's topics
            topic = get_param(client, "collector", "image_topic")
            assert topic == "/spot/camera/frontleft/image", log.read_text()
        else:  # the profile's pose_source: tf reached it, and tf2 is missing here
            wait_for(lambda: proc.poll() is not None, 60, "bringup to stop")
            assert "error: pose_source 'tf' needs tf2_ros" in log.read_text()
            assert "collector exited with 2" in log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_restart_delay_doubles_and_starts_over_after_a_healthy_run():
    from m3_ros.bringup import crashes_in_a_row, restart_delay

    assert [restart_delay(k) for k in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert restart_delay(10**6) == 30.0  # no overflow however long it crash-loops
    crashes, delays = 0, []
    # run times (s) before each exit: three quick crashes, a healthy hour, two quick crashes,
    # then one exactly at the threshold (healthy) and one just under it (not)
    for ran in (0.3, 0.2, 2.0, 3600.0, 0.1, 0.1, 30.0, 29.9):
        crashes = crashes_in_a_row(crashes, ran, healthy_after_s=30.0)
        delays.append(restart_delay(crashes))
    assert delays == [1, 2, 4, 1, 2, 4, 1, 2]


def test_bringup_rejects_a_bad_healthy_period():
    for value in ("-1", "nan", "inf"):
        res = subprocess.run(
            [sys.executable, "-m", "m3_ros.bringup", "--healthy-after", value],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().splitlines() == [
            f"m3-bringup: error: --healthy-after must be a finite number of seconds >= 0, "
            f"got {float(value)}"
        ]


def test_bringup_restarts_a_crashed_node(tmp_path):
    """nav_bridge with an invalid parameter type crashes at start; bringup restarts it with a
    doubling delay (its runs are never healthy) and keeps the memory server running, then
    stops everything on SIGINT."""
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
        deadline = time.monotonic() + 120
        while log.read_text().count("restart in") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(2)
        proc.wait(timeout=30)
    err = log.read_text()
    assert proc.returncode == 0
    delays = re.findall(r"nav_bridge exited \(\d+\) after [\d.]+s; restart in ([\d.]+)s", err)
    assert delays[:2] == ["1.0", "2.0"], err[-3000:]
    assert "memory_server exited" not in err


# --- the launch file run for real (needs launch_ros; ros2launch when installed) -----------

# SIGINT must reach the launcher even when this test runs in a shell's background job (which
# starts children with SIGINT ignored): reset it, then run `ros2 launch` (ros2launch
# installed) or a LaunchService on the file (launch_ros alone).
_SIGINT = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
ROS2_CLI = _SIGINT + "from ros2cli.cli import main; sys.exit(main())"
LAUNCH_SERVICE = _SIGINT + (
    "from launch import LaunchService; from launch.actions import IncludeLaunchDescription; "
    "from launch.launch_description_sources import PythonLaunchDescriptionSource as Src; "
    "ls = LaunchService(); ls.include_launch_description(IncludeLaunchDescription("
    "Src(sys.argv[1]), launch_arguments=[a.split(':=', 1) for a in sys.argv[2:]])); "
    "sys.exit(ls.run())"
)


def install_overlay(prefix: Path) -> Path:
    """What the CMake install puts where launch_ros looks (share/ + lib/m3_ros/<node>, see
    CMakeLists.txt and tests/test_package_build.py), made from this checkout in seconds; the
    node executables run this interpreter. Returns the installed launch file."""
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "m3_ros").touch()
    share = prefix / "share" / "m3_ros"
    (share / "launch").mkdir(parents=True)
    shutil.copy(REPO / "package.xml", share)
    shutil.copy(LAUNCH, share / "launch")
    shutil.copytree(REPO / "config", share / "config")
    (prefix / "lib" / "m3_ros").mkdir(parents=True)
    for node in NODES:
        exe = prefix / "lib" / "m3_ros" / node
        exe.write_text(
            f"#!{sys.executable}\nimport sys\nfrom m3_ros.{node} import main\nsys.exit(main())\n"
        )
        exe.chmod(0o755)
    return share / "launch" / LAUNCH.name


def launch_env(tmp: Path) -> dict:
    """Environment for a launcher: the overlay first, the nodes running this checkout's code
    (also where an installed m3_ros is sourced), unbuffered output."""
    return {
        **os.environ,
        "AMENT_PREFIX_PATH": os.pathsep.join(
            [str(tmp / "install"), os.environ.get("AMENT_PREFIX_PATH") or sys.prefix]
        ),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_LOGGING_BUFFERED_STREAM": "0",
    }


class Launch:
    """The launch file in its own process group, with launch arguments; output in a log."""

    def __init__(self, tmp: Path, args: dict) -> None:
        launch_file = install_overlay(tmp / "install")
        argv = [f"{k}:={v}" for k, v in args.items()]
        if importlib.util.find_spec("ros2launch") is not None:
            cmd = [sys.executable, "-c", ROS2_CLI, "launch", "m3_ros", LAUNCH.name, *argv]
        else:
            cmd = [sys.executable, "-c", LAUNCH_SERVICE, str(launch_file), *argv]
        self.log = tmp / "launch.log"
        with self.log.open("w") as out:  # cwd: the nodes' relative folders land in tmp
            self.proc = subprocess.Popen(
                cmd,
                cwd=tmp,
                env=launch_env(tmp),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text()

    def pids(self, node: str) -> list[int]:
        """Every pid launch started for ``node``, oldest first."""
        pattern = rf"\[{node}-\d+\]: process started with pid \[(\d+)\]"
        return [int(p) for p in re.findall(pattern, self.output())]

    def fail(self, what: str) -> str:
        return f"{what}\n--- launch output ---\n{self.output()[-4000:]}"

    def stop(self) -> int | None:
        """SIGINT (ctrl-c) and wait; anything left in the group is killed."""
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        else:
            code = self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the nodes share the launcher's group
        except ProcessLookupError:
            pass
        self.proc.wait()
        return code


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def call_service(client, srv_type, name: str, request, timeout: float = 90.0):
    """The response, or None after ``timeout``. Retried: right after a respawn the dead
    server's endpoints linger in DDS discovery (its lease), so a first request may go
    unanswered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cli = client.node.create_client(srv_type, name)
        try:
            if cli.wait_for_service(timeout_sec=max(0.1, deadline - time.monotonic())):
                future = cli.call_async(request)
                attempt = min(deadline, time.monotonic() + 15.0)
                while not future.done() and time.monotonic() < attempt:
                    time.sleep(0.02)
                if future.done():
                    return future.result()
        finally:
            client.node.destroy_client(cli)
    return None


def get_param(client, node: str, name: str):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    res = call_service(
        client, GetParameters, f"/{node}/get_parameters", GetParameters.Request(names=[name])
    )
    return None if res is None else parameter_value_to_python(res.values[0])


@pytest.fixture(scope="session")
def launch_ros():
    """Skips before the (session) memory is trained: listed first, same scope."""
    return pytest.importorskip("launch_ros")


def test_launch_file_runs_the_nodes_for_real(launch_ros, trained_memory, client, tmp_path):
    """`ros2 launch m3_ros memory.launch.py` with memory_path / params_file arguments: all
    four nodes come up, the memory server is active and answers over DDS, the arguments
    reach the nodes (memory_path beats the YAML), a killed node is respawned while the
    others keep running, and ctrl-c stops everything cleanly."""
    from lifecycle_msgs.srv import GetState

    from m3_ros.srv import GroundObject

    memory, _ = trained_memory
    doc = yaml.safe_load(PARAMS.read_text())
    doc["memory_server"]["ros__parameters"]["memory_path"] = str(tmp_path / "not_this_one")
    doc["nav_bridge"]["ros__parameters"]["standoff_distance"] = 1.25
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    launch = Launch(tmp_path, {"params_file": params, "memory_path": memory})
    try:
        names = client.node.get_node_names
        wait_for(
            lambda: set(NODES) <= set(names()) or launch.proc.poll() is not None,
            120,
            "the four nodes",
        )
        assert launch.proc.poll() is None, launch.fail("launch exited")
        assert set(NODES) <= set(names()), launch.fail(f"nodes up: {names()}")
        ground = GroundObject.Request(text="chair")
        res = call_service(client, GroundObject, "/memory_server/ground_object", ground)
        assert res is not None, launch.fail("no answer from /memory_server/ground_object")
        assert res.success and res.objects and res.objects[0].label == "chair", res.message
        state = call_service(client, GetState, "/memory_server/get_state", GetState.Request())
        assert state is not None and state.current_state.label == "active", launch.fail("state")
        assert get_param(client, "memory_server", "memory_path") == str(memory)
        assert get_param(client, "nav_bridge", "standoff_distance") == 1.25
        assert get_param(client, "trainer", "use_sim_time") is False

        # respawn: kill -9 the memory server; launch restarts it, the others keep running
        first = {node: launch.pids(node) for node in NODES}
        assert all(len(p) == 1 for p in first.values()), launch.fail(f"pids: {first}")
        os.kill(first["memory_server"][0], signal.SIGKILL)
        wait_for(lambda: len(launch.pids("memory_server")) == 2, 60, "the respawn")
        res = call_service(client, GroundObject, "/memory_server/ground_object", ground)
        assert res is not None and res.success, launch.fail("the respawned server")
        for node in NODES:
            if node != "memory_server":
                assert launch.pids(node) == first[node] and alive(first[node][0]), node
        running = [launch.pids(node)[-1] for node in NODES]
    finally:
        code = launch.stop()
    out = launch.output()
    assert code == 0, launch.fail(f"launch exit code {code}")
    for pid in running:
        assert f"process has finished cleanly [pid {pid}]" in out, launch.fail(str(pid))
    assert "Traceback" not in out, launch.fail("a traceback")


def test_launch_switches_leave_nodes_out_and_robot_overlays_apply(launch_ros, client, tmp_path):
    pytest.importorskip("tf2_ros")  # the spot profile takes the camera pose from tf2
    off = {"trainer": "false", "memory_server": "false", "nav_bridge": "false", "robot": "spot"}
    launch = Launch(tmp_path, off)
    try:
        up = lambda: "collector" in client.node.get_node_names()  # noqa: E731
        wait_for(lambda: up() or launch.proc.poll() is not None, 90, "collector")
        assert up(), launch.fail("collector did not come up")
        topic = get_param(client, "collector", "image_topic")
        assert topic == "/spot/camera/frontleft/image", launch.fail("the robot overlay")
    finally:
        code = launch.stop()
    out = launch.output()
    assert out.count("process started") == 1 and len(launch.pids("collector")) == 1, out
    assert code == 0 and "process has finished cleanly" in out, launch.fail(f"exit {code}")


def test_ros2_launch_show_args_describes_every_argument(launch_ros, tmp_path):
    pytest.importorskip("ros2launch")
    install_overlay(tmp_path / "install")
    res = subprocess.run(
        [sys.executable, "-c", ROS2_CLI, "launch", "m3_ros", LAUNCH.name, "--show-args"],
        env=launch_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    share = tmp_path / "install" / "share" / "m3_ros"
    assert f"(default: '{share / 'config' / 'm3_params.yaml'}')" in res.stdout
    for name, what in launch_node_table().items():
        assert f"'{name}':" in res.stdout and f"start {name}: {what}" in res.stdout
    for name in ("params_file", "robot", "memory_path", "use_sim_time"):
        assert f"'{name}':" in res.stdout
