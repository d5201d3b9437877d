"""Grounding end to end on a random room: trained with the default schedule (fewer steps and
Gaussians, for time), queried with the default parameters, every object must be the top
answer within 0.3 m of its true box, every answer must lie on the object asked for, and labels
of the vocabulary that are not in the room must get no answer. The accuracy over many fresh
rooms and noisy patch features is measured by benchmarks/bench_grounding.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3_core.data.features import FeatureStore
from m3_core.data.synthetic import read_objects_json
from m3_core.data.synthetic_rooms import HOUSEHOLD, write_room
from m3_core.query import MemoryPredictor
from m3_core.train import FeatureSpec, TrainConfig, Trainer

HIT_RADIUS = 0.3  # metres from the answer's centre to the true box
ROOM_SEED = 5
ABSENT = 6


def box_distance(p, center, size) -> float:
    d = np.maximum(np.abs(np.asarray(p) - np.asarray(center)) - np.asarray(size) / 2, 0.0)
    return float(np.linalg.norm(d))


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """(predictor, true objects, absent labels) of a 6-object room, trained."""
    root = tmp_path_factory.mktemp("room")
    ds = write_room(
        root / "scene", frames=24, width=80, height=60, objects=6, seed=ROOM_SEED,
        features="exact",
    )  # fmt: skip
    cfg = TrainConfig.sized_for(
        "cpu", len(ds.train_indices), 80, 60, features=[FeatureSpec("labels")], device="cpu",
        seed=0, iterations=300, init_points=8000,
    )  # fmt: skip
    Trainer(ds, cfg, root / "mem").run()
    truth = read_objects_json(root / "scene")["objects"]
    present = {o["label"] for o in truth}
    absent = [lab for lab in HOUSEHOLD if lab not in present][:ABSENT]
    store = FeatureStore(root / "mem", "labels")  # absent labels join the vocabulary
    texts, emb = store.vocabulary()
    new = torch.nn.functional.normalize(
        torch.randn(ABSENT, emb.shape[1], generator=torch.Generator().manual_seed(1)), dim=-1
    )
    store.save_vocabulary(texts + absent, torch.cat([emb, new]))
    return MemoryPredictor.load(root / "mem"), truth, absent


def test_every_object_is_the_top_answer_within_0_3_m(room):
    pred, truth, _ = room
    assert len(truth) == 6
    misses = {}
    for o in truth:
        found = pred.ground(o["label"])
        d = box_distance(found[0].center, o["center"], o["size"]) if found else np.inf
        if d > HIT_RADIUS:
            misses[o["label"]] = d
    assert not misses, f"top answers off their box (m): {misses}"


def test_every_answer_lies_on_the_object_asked_for(room):
    pred, truth, _ = room
    for o in truth:
        for a in pred.ground(o["label"]):
            assert box_distance(a.center, o["center"], o["size"]) <= HIT_RADIUS, (o, a)
            assert 0.5 <= a.score <= 1.0 and a.support > 0


def test_labels_not_in_the_room_get_no_answer(room):
    pred, _, absent = room
    assert {lab: len(pred.ground(lab)) for lab in absent} == dict.fromkeys(absent, 0)
