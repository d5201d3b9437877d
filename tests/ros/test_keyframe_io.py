"""Keyframe storage policy: which recording a (re)started collector writes, and a trainer
that refuses keyframes naming paths outside its recordings folder."""

from __future__ import annotations

import os
import re
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("rclpy")
from m3_ros.keyframe_io import KeyframeReceiver, choose_recording  # noqa: E402
from m3_ros.msg import Keyframe  # noqa: E402


def _recording(root, name: str, age_s: float) -> None:
    f = root / name / "transforms.json"
    f.parent.mkdir(parents=True)
    f.write_text("{}")
    t = time.time() - age_s
    os.utime(f, (t, t))


def test_a_respawned_collector_continues_its_recent_recording(tmp_path):
    _recording(tmp_path, "rec_old", age_s=3600)
    _recording(tmp_path, "rec_recent", age_s=30)
    _recording(tmp_path, "rec_older_recent", age_s=120)
    _recording(tmp_path, "walk", age_s=1)  # named recordings are never picked implicitly
    assert choose_recording(tmp_path, "", 300) == "rec_recent"
    assert choose_recording(tmp_path, "kitchen", 300) == "kitchen"
    fresh = choose_recording(tmp_path, "", 10)  # nothing that recent: a new recording
    assert re.fullmatch(r"rec_\d{8}_\d{6}", fresh) and fresh not in {"rec_old", "rec_recent"}
    assert re.fullmatch(r"rec_\d{8}_\d{6}", choose_recording(tmp_path / "none", "", 300))


@pytest.mark.parametrize("rid", ["../escape", "/abs", "", "..", "a/b"])
def test_receiver_refuses_recording_ids_that_are_not_plain_names(rid, tmp_path):
    logged: list = []
    logger = SimpleNamespace(warning=logged.append)
    KeyframeReceiver(tmp_path / "rec", logger).on_keyframe(Keyframe(recording_id=rid, name="f"))
    assert logged and "bad recording_id" in logged[0]
    assert not any(tmp_path.rglob("*transforms.json")) and not (tmp_path / "escape").exists()
