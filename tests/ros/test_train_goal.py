"""TrainMemory goals -> (data, config, output) on the trainer's host, and progress -> feedback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("rclpy")
from m3_core.errors import InvalidInputError  # noqa: E402
from m3_core.train import FeatureSpec  # noqa: E402
from m3_ros.action import TrainMemory  # noqa: E402
from m3_ros.train_goal import feedback_msg, resolve_goal  # noqa: E402
from m3_ros.trainer import PARAMS  # noqa: E402


def params(tmp_path: Path, **over):
    values = {
        **PARAMS,
        "recordings_dir": str(tmp_path / "rec"),
        "memories_dir": str(tmp_path / "mem"),
        **over,
    }
    return values.__getitem__


def test_a_local_dataset_path_wins_and_names_the_memory(tmp_path):
    local = tmp_path / "site" / "walk_a"
    local.mkdir(parents=True)
    goal = TrainMemory.Goal(dataset_path=str(local), recording_id="other")
    data, cfg, out = resolve_goal(goal, params(tmp_path))
    assert data == local and out == tmp_path / "mem" / "walk_a"
    assert cfg.iterations == 1000 and cfg.features == [FeatureSpec("effnet")]  # small preset
    assert (cfg.device, cfg.max_image_size) == ("auto", (640, 480))


def test_a_remote_path_falls_back_to_the_streamed_recording(tmp_path):
    goal = TrainMemory.Goal(
        dataset_path="/robot/only/path",
        recording_id="rec_1",
        features=["clip:8:0.9", "dinov2"],
        iterations=40,
        device="cpu",
        output_path=str(tmp_path / "elsewhere"),
    )
    data, cfg, out = resolve_goal(goal, params(tmp_path, preset="paper", iterations=7))
    assert data == tmp_path / "rec" / "rec_1" and out == tmp_path / "elsewhere"
    assert cfg.features == [FeatureSpec("clip", 8, 0.9), FeatureSpec("dinov2")]
    assert (cfg.iterations, cfg.device, cfg.init_points) == (40, "cpu", 100_000)


def test_a_goal_without_data_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="dataset_path or a recording_id"):
        resolve_goal(TrainMemory.Goal(dataset_path="/nowhere"), params(tmp_path))
    with pytest.raises(InvalidInputError, match="bad feature spec 'clip:x'"):
        resolve_goal(TrainMemory.Goal(features=["clip:x"], recording_id="r"), params(tmp_path))


def test_progress_becomes_feedback():
    p = SimpleNamespace(
        stage="training", step=3, total=40, loss=0.5, psnr=21.0, num_gaussians=9, eta_s=1.5
    )
    fb = feedback_msg(p)
    got = (fb.stage, fb.step, fb.total, fb.loss, fb.psnr, fb.num_gaussians, fb.eta_seconds)
    assert got == ("training", 3, 40, 0.5, 21.0, 9, 1.5)
