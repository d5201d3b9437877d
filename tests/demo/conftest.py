"""The full-size demo (the README's demo command) is minutes of mostly CPU-bound training, and
the rest of the suite leaves a core idle much of the time (one-threaded tests, nodes waiting
on discovery). So it starts in the background as soon as the tests are collected: niced
(``NICE``: the other tests keep the cores when they need them), in a ROS domain of its own
(the demo's range, 101-215, never the tests' 1-100) and a folder of its own. Its test is moved
to the end of the run and waits for it; a run that stops early kills it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO

FULL_DEMO = "test_full_demo_grounds_the_objects_with_the_default_threshold"
DEMO_ARGS = ["--lens", "wide"]  # the README's command through a wide-angle lens
NICE = 10
_KEY = pytest.StashKey["BackgroundDemo"]()


class BackgroundDemo:
    """``python -m demo.run --out DIR/demo *DEMO_ARGS`` started now; ``wait()`` for its end."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="m3_full_demo_"))
        self.out = self.root / "demo"
        env = {k: v for k, v in os.environ.items() if k != "ROS_DOMAIN_ID"}  # the demo's own
        self.log = (self.root / "output.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo.run", "--out", str(self.out), *DEMO_ARGS],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the demo and its nodes
            preexec_fn=lambda: os.nice(NICE),  # inherited by the nodes it starts
        )

    def wait(self, timeout: float) -> tuple[int, str]:
        """(exit code, its output); the demo is killed if it runs past ``timeout``."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -1
        return code, (self.root / "output.log").read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self, keep: bool) -> None:
        self.kill()
        self.log.close()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _runnable() -> bool:
    return all(importlib.util.find_spec(m) for m in ("rclpy", "efficientnet_lite_pytorch"))


@pytest.hookimpl(trylast=True)  # after -k / -m / --deselect have chosen the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    full = [item for item in items if item.name == FULL_DEMO]
    if not full or config.option.collectonly or not _runnable():
        return
    items[:] = [item for item in items if item.name != FULL_DEMO] + full
    config.stash[_KEY] = BackgroundDemo()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    demo = session.config.stash.get(_KEY, None)
    if demo is not None:
        demo.close(keep=exitstatus != 0)


@pytest.fixture
def full_demo(request: pytest.FixtureRequest) -> BackgroundDemo:
    """The demo started at collection (started here if collection did not start it)."""
    demo = request.config.stash.get(_KEY, None)
    if demo is None:
        demo = request.config.stash[_KEY] = BackgroundDemo()
    return demo
