"""The memory's world frame is a typed, checked field: saved with the memory, read from
``extra["world_frame"]`` of memories saved before the field existed, refused when it cannot
name a ROS frame (on set, on save and on load)."""

from __future__ import annotations

import json

import pytest

from m3_core.errors import CheckpointError, InvalidInputError
from m3_core.memory import Memory
from m3_core.memory.io import meta_digest


@pytest.fixture
def memory(config, banks):
    from tests.core.memory.conftest import make_gaussians

    return Memory.create(config, make_gaussians(40, config.query_dim), banks)


def test_set_saved_and_loaded(memory, tmp_path):
    assert memory.world_frame == ""  # the data did not say
    memory.world_frame = "odom"
    memory.save(tmp_path / "m", extra={"step": 3})
    loaded = Memory.load(tmp_path / "m")
    assert loaded.world_frame == "odom"
    assert json.loads((tmp_path / "m" / "memory.json").read_text())["extra"] == {
        "world_frame": "odom",
        "step": 3,
    }


def test_older_memories_keep_their_frame_from_extra(memory, tmp_path):
    memory.save(tmp_path / "m", extra={"world_frame": "map"})  # how the trainer saved it
    assert Memory.load(tmp_path / "m").world_frame == "map"


@pytest.mark.parametrize("bad", [5, None, "map frame", "map\n", "x" * 257])
def test_a_frame_that_names_no_ros_frame_is_refused(memory, tmp_path, bad):
    with pytest.raises(InvalidInputError, match="world_frame"):
        memory.world_frame = bad
    with pytest.raises(InvalidInputError, match="world_frame"):
        memory.save(tmp_path / "m", extra={"world_frame": bad})
    assert not (tmp_path / "m").exists()
    assert memory.world_frame == ""

    memory.save(tmp_path / "ok")
    path = tmp_path / "ok" / "memory.json"
    meta = json.loads(path.read_text())
    meta["extra"]["world_frame"] = bad  # edited by hand, checksum made to agree
    meta["meta_sha256"] = meta_digest(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="world_frame"):
        Memory.load(tmp_path / "ok")
