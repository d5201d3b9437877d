"""A live memory carries the recording's world frame into its snapshots (typed, checked)."""

from __future__ import annotations

import json

import pytest

from m3_core.errors import InvalidInputError
from m3_core.live import LiveConfig, LiveMemory
from m3_core.memory import Memory
from tests.core.live.conftest import labels_config, room_keyframes


def test_snapshot_and_saved_folder_carry_the_world_frame(tmp_path):
    live = LiveMemory(labels_config(), LiveConfig(fit_steps=0), world_frame="odom")
    live.add_keyframe(room_keyframes(1, 32, 24)[0])
    assert live.snapshot().world_frame == "odom"
    out = live.save(tmp_path / "live")
    assert json.loads((out / "memory.json").read_text())["extra"]["world_frame"] == "odom"
    assert Memory.load(out).world_frame == "odom"


def test_unknown_frame_is_left_out_and_a_bad_one_refused(tmp_path):
    live = LiveMemory(labels_config(), LiveConfig(fit_steps=0))
    live.add_keyframe(room_keyframes(1, 32, 24)[0])
    assert live.world_frame == "" and "world_frame" not in live.snapshot().extra
    for bad in ("map frame", 3):
        with pytest.raises(InvalidInputError, match="world_frame"):
            LiveMemory(labels_config(), world_frame=bad)
