"""No lost training request: the collector re-sends a TrainMemory goal that the trainer lost
(killed mid-training) once a trainer is back, and reports each step on ~/status."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES
from tests.ros.conftest import wait_for

pytest.importorskip("rclpy")
from std_srvs.srv import Trigger  # noqa: E402

from m3_ros.msg import CollectorStatus  # noqa: E402
from m3_ros.node_utils import latched_qos  # noqa: E402


def fake_trainer(mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURES / "fake_trainer.py"), mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.readline().strip() == "READY"
    return proc


def test_a_goal_lost_to_a_trainer_crash_is_sent_again(spawn, client, tmp_path):
    collector = spawn(
        "collector",
        {
            "output_dir": str(tmp_path / "rec"),
            "recording_id": "walk",
            "min_keyframes": 0,
            "shared_filesystem": False,
            "retry_delay_s": 1.0,
            "goal_timeout_s": 5.0,
            "status_period": 0.2,
        },
    )
    status = client.collect(CollectorStatus, "/collector/status", latched_qos(1))
    hang = fake_trainer("hang")
    try:
        wait_for(lambda: status, 30, "the collector's status", collector)
        assert status[-1].training == "idle" and status[-1].training_attempts == 0
        res = client.call(Trigger, "/collector/start_training", Trigger.Request())
        while not res.success and "not available" in res.message:  # discovery of the server
            res = client.call(Trigger, "/collector/start_training", Trigger.Request())
        assert res.success, res.message
        wait_for(lambda: status[-1].training == "training", 30, "the goal accepted", collector)
        again = client.call(Trigger, "/collector/start_training", Trigger.Request())
        assert not again.success and "already training" in again.message
        hang.kill()  # kill -9 mid-training: the goal is lost with the process
        hang.wait(10)
        wait_for(lambda: status[-1].training == "retrying", 60, "the loss noticed", collector)
        assert "went away" in status[-1].training_message
    finally:
        hang.kill()
    good = fake_trainer("succeed")
    try:
        wait_for(lambda: status[-1].training == "succeeded", 60, "the re-sent goal", collector)
    finally:
        good.kill()
    last = status[-1]
    assert last.training_attempts == 2 and "fake training of walk" in last.training_message
    assert collector.alive()
