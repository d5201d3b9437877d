"""Which memory of a recording is served (``m3_core.live.choose``): held-out keyframes, the
rule on known scores, and the measure on real memories of a synthetic walk."""

from __future__ import annotations

import math

import pytest

from m3_core.errors import InvalidInputError
from m3_core.live.choose import (
    LIVE,
    TRAINED,
    Score,
    choose,
    held_out_frames,
    score_memory,
)


def test_held_out_frames_are_test_views_in_neither_memory_latest_first_kept():
    test = ["f00", "f08", "f16", "f24"]
    trained = ["f01", "f02", "f16"]  # f16: a test view the trained memory was built from
    live = ["f00", "f01"]  # f00 folded while it was the only keyframe
    assert held_out_frames(test, trained, live, 4) == ["f08", "f24"]
    assert held_out_frames(test, trained, live, 1) == ["f24"]  # the most recent
    assert held_out_frames(test, [], [], 3) == ["f08", "f16", "f24"]
    assert held_out_frames(test, [], [], 0) == []
    with pytest.raises(InvalidInputError):
        held_out_frames(test, [], [], -1)


def test_no_trained_memory_serves_the_live_snapshot():
    d = choose(None, Score(0))
    assert d.serve == LIVE and d.reason == "no trained memory"


@pytest.mark.parametrize(
    ("trained", "live", "serve"),
    [
        (0.20, 0.10, LIVE),  # live decodes closer to the real features
        (0.10, 0.20, TRAINED),
        (0.15, 0.15, TRAINED),  # a tie keeps the trained memory
        (0.3538, 0.3529, TRAINED),  # the demo's: 0.25 % lower is within the noise
        (0.3538, 0.3460, LIVE),  # 2.2 % lower: clearly better
    ],
)
def test_feature_distance_decides(trained, live, serve):
    # PSNR disagrees with 1-cos in every case: the features decide when both have them
    d = choose(
        Score(3, 30.0 if serve == LIVE else 10.0, {"labels": trained}),
        Score(3, 10.0 if serve == LIVE else 30.0, {"labels": live}),
    )
    assert d.serve == serve
    assert (d.measure, d.trained, d.live, d.frames) == ("1-cos[labels]", trained, live, 3)
    assert f"live {live:.4f} vs trained {trained:.4f} on 3 held-out keyframes" in str(d)


def test_mean_over_shared_features_only():
    trained = Score(2, 20.0, {"a": 0.1, "b": 0.5, "effnet": 0.9})  # mean over a, b: 0.3
    live = Score(2, 20.0, {"a": 0.2, "b": 0.3, "labels": 0.0})  # 0.25; labels not shared
    d = choose(trained, live)
    assert d.serve == LIVE and d.measure == "1-cos[a,b]"
    assert d.trained == pytest.approx(0.3, abs=1e-12) and d.live == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize(
    ("trained", "live", "serve"),
    [(25.0, 20.0, TRAINED), (20.0, 25.0, LIVE), (20.0, 20.4, TRAINED)],  # 0.4 dB: within noise
)
def test_psnr_decides_without_a_shared_feature(trained, live, serve):
    d = choose(Score(4, trained, {"effnet": 0.5}), Score(4, live, {"labels": 0.01}))
    assert d.serve == serve and d.measure == "PSNR"
    assert (d.trained, d.live) == (trained, live)


def test_no_evidence_keeps_the_trained_memory():
    better = Score(3, 40.0, {"labels": 0.0})
    assert choose(Score(0), Score(0)).serve == TRAINED  # no held-out keyframe
    assert choose(Score(3, 10.0, {"labels": math.nan}), better).serve == TRAINED
    assert choose(Score(3, 10.0, {"labels": 0.5}), Score(3, 40.0, {"labels": math.inf})).serve \
        == TRAINED  # fmt: skip


def test_score_from_evaluate_metrics():
    metrics = {"frames": 2, "psnr": 21.5, "ssim": 0.7,
               "features": {"labels": {"cos_dist": 0.25, "mse": 0.01}}}  # fmt: skip
    assert Score.from_metrics(metrics) == Score(2, 21.5, {"labels": 0.25})
    assert Score.from_metrics({"frames": 0, "features": {}}).frames == 0


def test_the_measure_prefers_the_memory_that_explains_the_held_out_views(tmp_path):
    """Real memories of a synthetic walk (17 keyframes, test views 0, 8, 16): one folded from
    the training keyframes; one that also folded the held-out views (it must measure better:
    measured 0.085 vs 0.18 mean 1-cos); one whose queries are zeroed (every Gaussian decodes
    to the bank mean: measured 0.39)."""
    from m3_core.config import MemoryConfig
    from m3_core.data import make_synthetic_scene
    from m3_core.live import LiveMemory, keyframe_from_dataset
    from m3_core.types import ModelSpec

    walk = make_synthetic_scene(tmp_path / "walk", num_frames=17, width=40, height=30)
    assert walk.test_indices == [0, 8, 16]

    def fold(ids):
        live = LiveMemory(MemoryConfig(models=[ModelSpec("labels", 16, 8, 0.95)], sh_degree=0))
        for i in ids:
            live.add_keyframe(keyframe_from_dataset(walk, i, ["labels"]))
        return live.snapshot()

    live = score_memory(fold(walk.train_indices), walk, walk.test_indices)
    seen = score_memory(fold(range(17)), walk, walk.test_indices)
    blind = fold(walk.train_indices)
    blind.gaussians["queries"].data.zero_()
    blind = score_memory(blind, walk, walk.test_indices)
    assert live.frames == seen.frames == blind.frames == 3
    assert seen.cos_dist["labels"] < live.cos_dist["labels"] - 0.05
    assert blind.cos_dist["labels"] > live.cos_dist["labels"] + 0.1
    assert blind.psnr == pytest.approx(live.psnr, abs=1e-9)  # same colours
    assert choose(seen, live).serve == TRAINED
    assert choose(blind, live).serve == LIVE
