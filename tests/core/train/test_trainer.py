"""End-to-end training on a tiny synthetic scene: it learns, resumes, grows, and refuses."""

from __future__ import annotations

import json

import pytest
import torch

from m3_core.data import SceneDataset
from m3_core.errors import InvalidInputError
from m3_core.memory import Memory
from m3_core.train import Trainer
from m3_core.train.evaluate import evaluate
from tests.fixtures.training import tiny_config


def test_training_learns_colour_and_features(tiny_scene, tmp_path):
    cfg = tiny_config(iterations=150)
    events = []
    res = Trainer(tiny_scene, cfg, tmp_path / "mem", on_progress=events.append).run()
    assert not res.cancelled and res.step == 150
    stages = [e.stage for e in events]
    assert stages[0] == "loading" and "building_psc" in stages and stages[-1] == "done"
    train_steps = [e.step for e in events if e.stage == "training"]
    assert train_steps == list(range(1, 151))
    # a memory that learned: better than its own initialisation on held-out views
    init = Trainer(tiny_scene, tiny_config(iterations=0), tmp_path / "init").run().memory
    before = evaluate(init, tiny_scene, tiny_scene.test_indices)
    after = evaluate(res.memory, tiny_scene, tiny_scene.test_indices)
    assert after["psnr"] > before["psnr"] + 3.0, (before, after)
    assert after["psnr"] > 17.0
    cos_b, cos_a = (
        before["features"]["labels"]["cos_dist"],
        after["features"]["labels"]["cos_dist"],
    )
    assert cos_a < 0.6 * cos_b, (cos_b, cos_a)
    # what was saved is what was trained, with the resolved config beside it
    loaded = Memory.load(tmp_path / "mem")
    torch.testing.assert_close(loaded.gaussians["means"], res.memory.gaussians["means"])
    saved = json.loads((tmp_path / "mem" / "train_config.json").read_text())
    assert saved["iterations"] == 150 and saved["features"][0]["name"] == "labels"
    assert (tmp_path / "mem" / "features" / "labels" / "vocabulary.npz").exists()
    assert loaded.extra["frames"] == [tiny_scene.frames[i].name for i in tiny_scene.train_indices]


def test_stop_saves_and_rerun_resumes(tiny_scene, tmp_path):
    cfg = tiny_config(iterations=60)
    steps = []

    def stop_at_25():
        return len(steps) >= 25

    def record(p):
        if p.stage == "training":
            steps.append(p.step)

    res = Trainer(
        tiny_scene, cfg, tmp_path / "m", on_progress=record, should_stop=stop_at_25
    ).run()
    assert res.cancelled and res.step == 25
    state = json.loads((tmp_path / "m" / "train_state.json").read_text())
    assert state["step"] == 25
    steps.clear()
    res2 = Trainer(tiny_scene, cfg, tmp_path / "m", on_progress=record).run()
    assert not res2.cancelled and res2.step == 60
    assert steps == list(range(26, 61))  # continued, not restarted


def test_incremental_growth_with_new_frames(tiny_scene, tmp_path):
    first = SceneDataset(tiny_scene.root, tiny_scene.frames[:8], [0], world_frame="odom")
    cfg = tiny_config(iterations=40)
    res = Trainer(first, cfg, tmp_path / "m").run()
    assert res.memory.extra["world_frame"] == "odom"  # the frame travels to the server
    n0 = res.memory.num_gaussians
    bank0 = res.memory.banks["labels"].shape[0]
    # the same folder with more frames: refused unless incremental
    with pytest.raises(InvalidInputError, match="other frames"):
        Trainer(tiny_scene, cfg, tmp_path / "m").run()
    elsewhere = SceneDataset(tiny_scene.root, tiny_scene.frames, [0], world_frame="map")
    with pytest.raises(InvalidInputError, match="is in frame 'odom', the data in 'map'"):
        Trainer(elsewhere, cfg, tmp_path / "m", incremental=True).run()
    events = []
    res2 = Trainer(
        tiny_scene, cfg, tmp_path / "m", incremental=True, on_progress=events.append
    ).run()
    growth = res2.memory.extra["last_growth"]
    assert growth["new_frames"] == len(tiny_scene.train_indices) - len(first.train_indices)
    assert growth["gaussians_added"] > 0
    assert res2.memory.banks["labels"].shape[0] == bank0 + growth["psc_added"].get("labels", 0)
    assert "growing" in [e.stage for e in events]
    assert res2.memory.num_gaussians != n0
    assert len(res2.memory.extra["frames"]) == len(tiny_scene.train_indices)
    assert res2.memory.extra["world_frame"] == "odom"


def test_missing_features_are_a_clear_error(tiny_scene, tmp_path):
    from m3_core.train import FeatureSpec

    cfg = tiny_config(features=[FeatureSpec("clip")])
    with pytest.raises(InvalidInputError, match="m3 extract"):
        Trainer(tiny_scene, cfg, tmp_path / "m").run()


def test_the_trainer_stores_the_threshold_it_used(tiny_scene, tmp_path):
    default = Trainer(tiny_scene, tiny_config(iterations=0), tmp_path / "a").run().memory
    rows = default.banks["labels"].shape[0]
    assert default.config.models[0].psc_threshold == 0.95  # the family default: it fits
    cfg = tiny_config(iterations=0, psc_max_rows=max(1, rows // 2))
    capped = Trainer(tiny_scene, cfg, tmp_path / "b").run().memory
    spec = Memory.load(tmp_path / "b").config.models[0]
    assert capped.banks["labels"].shape[0] <= rows // 2
    assert spec.psc_threshold < 0.95  # what incremental and live growth will use
