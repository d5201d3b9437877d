"""The full ament_cmake build (what colcon runs on a ROS 2 install) from a copy of the
package: interfaces + Python packages + node executables + launch/config are installed,
and the installed package imports (generated interfaces and hand-written nodes together)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def test_full_cmake_install_layout(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    venv = Path(sys.prefix)
    src, build, prefix = tmp_path / "src", tmp_path / "build", tmp_path / "install"
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    env = {
        **os.environ,
        "AMENT_PREFIX_PATH": str(venv),
        "PATH": f"{venv}/bin:{os.environ['PATH']}",
        "LD_LIBRARY_PATH": f"{venv}/lib",
    }
    for cmd in (
        [
            "cmake",
            "-S",
            str(src),
            "-B",
            str(build),
            "-DBUILD_TESTING=OFF",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            f"-DCMAKE_PREFIX_PATH={venv}",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ],
        ["cmake", "--build", str(build), "-j2"],
        ["cmake", "--install", str(build)],
    ):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = site / "site-packages"
    for node in ("collector", "trainer", "memory_server", "nav_bridge", "bringup"):
        assert os.access(prefix / "lib" / "m3_ros" / node, os.X_OK), node
    share = prefix / "share" / "m3_ros"
    for f in ("launch/memory.launch.py", "config/m3_params.yaml", "config/m3.rviz", "package.xml"):
        assert (share / f).is_file(), f
    probe = (
        "import m3_ros, m3_core; from m3_ros.srv import GroundObject; "
        "import m3_ros.memory_server as s; from m3_ros.bringup import default_params_file; "
        "print(s.__file__); print(m3_core.__file__); print(default_params_file())"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": f"{prefix}:{venv}"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0].startswith(str(site)) and lines[1].startswith(str(site))
    assert lines[2] == str(share / "config" / "m3_params.yaml")
