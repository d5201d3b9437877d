"""Foundation checks: layering (m3_core imports no ROS), lint, CLI basics."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_m3_core_imports_no_ros():
    code = (
        "import sys, importlib, pkgutil, m3_core\n"
        "for m in pkgutil.walk_packages(m3_core.__path__, 'm3_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('rclpy', 'm3_ros', 'sensor_msgs', 'geometry_msgs', 'std_msgs', 'rosidl_parser'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"m3_core pulled in ROS modules: {out.stdout}"


def test_ruff_clean():
    ruff = [sys.executable, "-m", "ruff"]
    res = subprocess.run([*ruff, "check", str(REPO)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(
        [*ruff, "format", "--check", str(REPO)], capture_output=True, text=True, cwd=REPO
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_cli_unknown_verb_is_one_line_error():
    res = subprocess.run(
        [sys.executable, "-m", "m3_core.cli.main", "no-such-verb"], capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "invalid choice" in res.stderr
