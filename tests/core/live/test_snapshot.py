"""Snapshots: plain memories (save/load round trip), and the folder MemoryPredictor loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3_core.data.features import FeatureStore
from m3_core.errors import InvalidInputError
from m3_core.live import LiveConfig, LiveMemory
from m3_core.memory import Memory
from m3_core.query import MemoryPredictor, TextEncoder
from tests.core.live.conftest import labels_config, room_keyframes, room_labels


def _live(n: int = 3) -> LiveMemory:
    live = LiveMemory(labels_config(), LiveConfig(fit_steps=2))
    for kf in room_keyframes(n, 48, 36):
        live.add_keyframe(kf)
    return live


def test_snapshot_round_trips_through_save_and_load(tmp_path):
    live = _live()
    mem = live.snapshot()
    assert mem.num_gaussians == live.num_gaussians
    mem.save(tmp_path / "mem")
    back = Memory.load(tmp_path / "mem")
    for key, t in mem.gaussians.items():
        torch.testing.assert_close(back.gaussians[key], t, rtol=0, atol=0)
    torch.testing.assert_close(back.projections["labels"], mem.projections["labels"])
    torch.testing.assert_close(back.banks["labels"], mem.banks["labels"])
    q = mem.gaussians["queries"].detach()
    torch.testing.assert_close(back.decode("labels", q), mem.decode("labels", q))
    assert back.extra["live"]["keyframes"] == 3 and len(back.extra["cameras"]) == 3
    # a snapshot is a copy: later keyframes do not change it
    before = mem.gaussians["queries"].detach().clone()
    live.add_keyframe(room_keyframes(5, 48, 36)[4])
    torch.testing.assert_close(mem.gaussians["queries"].detach(), before)


def test_saved_folder_answers_through_memory_predictor(tmp_path):
    """``LiveMemory.save`` writes memory + grounding index + vocabulary; MemoryPredictor.load
    finds the index (not stale) with the fitted queries and the visibility in pixels."""
    live = _live()
    labels, vectors = room_labels()
    src = FeatureStore(tmp_path / "data", "labels")
    src.save_vocabulary(labels, vectors)
    out = live.save(tmp_path / "live", feature_dirs={"labels": tmp_path / "data/features/labels"})
    pred = MemoryPredictor.load(out, device="cpu")
    assert pred.index is not None
    torch.testing.assert_close(pred.index.queries, live.params["queries"])
    torch.testing.assert_close(pred.index.visibility, live.visibility / 0.25)
    assert pred.default_feature == "labels"
    in_memory = MemoryPredictor(
        live.snapshot(),
        TextEncoder(vocabularies={"labels": (labels, vectors)}),
        index=live.grounding_index(),
    )
    np.testing.assert_allclose(
        pred.relevancy("floor").numpy(), in_memory.relevancy("floor").numpy(), atol=1e-6
    )


def test_save_writes_the_snapshot_given_and_refuses_a_stale_one(tmp_path):
    """The live worker takes one snapshot per publish (to calibrate it) and saves that one:
    the folder equals a save that takes its own; a snapshot older than the memory is refused."""
    live = _live()
    given = live.snapshot()
    live.save(tmp_path / "given", snapshot=given)
    live.save(tmp_path / "own")
    a, b = Memory.load(tmp_path / "given"), Memory.load(tmp_path / "own")
    for key, t in b.gaussians.items():
        torch.testing.assert_close(a.gaussians[key], t, rtol=0, atol=0)
    assert a.extra == b.extra
    live.add_keyframe(room_keyframes(5, 48, 36)[4])
    with pytest.raises(InvalidInputError, match="current version"):
        live.save(tmp_path / "stale", snapshot=given)
    assert not (tmp_path / "stale").exists()
