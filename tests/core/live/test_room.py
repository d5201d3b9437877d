"""A small room streamed keyframe by keyframe grounds its objects (no training)."""

from __future__ import annotations

import numpy as np

from m3_core.data.synthetic import default_objects
from m3_core.live import LiveConfig, LiveMemory
from m3_core.query import MemoryPredictor, TextEncoder
from tests.core.live.conftest import labels_config, room_keyframes, room_labels

HIT_RADIUS = 0.3  # metres from the answer's centre to the true box (bench_grounding's rule)


def box_distance(p: np.ndarray, center, size) -> float:
    d = np.maximum(np.abs(p - np.asarray(center)) - np.asarray(size) / 2, 0.0)
    return float(np.linalg.norm(d))


def test_streamed_room_grounds_every_object():
    """The default room (5 boxes), 24 keyframes at 160x120 with ViT-like label features
    (stride 8, per-cell noise 0.15): after the walk, every object's top answer lies within
    0.3 m of its box."""
    live = LiveMemory(labels_config(), LiveConfig())
    for kf in room_keyframes(24, 160, 120, stride=8, cell_noise=0.15):
        live.add_keyframe(kf)
    labels, vectors = room_labels()
    pred = MemoryPredictor(
        live.snapshot(),
        TextEncoder(vocabularies={"labels": (labels, vectors)}),
        index=live.grounding_index(),
    )
    misses = {}
    for o in default_objects():
        found = pred.ground(o.label)
        d = box_distance(found[0].center, o.center, o.size) if found else np.inf
        if d > HIT_RADIUS:
            misses[o.label] = d
    assert not misses, f"objects not grounded within {HIT_RADIUS} m: {misses}"
