"""TrainMemory goals -> (data, config, output) on the trainer's host, and progress -> feedback."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("rclpy")
from m3_core.errors import InvalidInputError  # noqa: E402
from m3_core.train import FeatureSpec  # noqa: E402
from m3_ros.action import TrainMemory  # noqa: E402
from m3_ros.train_goal import FeedbackRate, feedback_msg, resolve_goal  # noqa: E402
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
    data, cfg, out = resolve_goal(goal, params(tmp_path, dataset_roots=[str(tmp_path / "site")]))
    assert data == local and out == tmp_path / "mem" / "walk_a"
    # preset auto: overrides, sized to the device and the dataset once it is loaded
    assert cfg == {"features": [FeatureSpec("effnet")], "device": "auto",
                   "max_image_size": (640, 480)}  # fmt: skip
    _, small, _ = resolve_goal(goal, params(tmp_path, dataset_roots=[str(tmp_path / "site")],
                                            preset="small"))  # fmt: skip
    assert small.iterations == 1000 and small.features == [FeatureSpec("effnet")]
    with pytest.raises(InvalidInputError, match="preset must be one of"):
        resolve_goal(goal, params(tmp_path, preset="fast"))


def test_a_remote_path_falls_back_to_the_streamed_recording(tmp_path):
    goal = TrainMemory.Goal(
        dataset_path="/robot/only/path",
        recording_id="rec_1",
        features=["clip:8:0.9", "dinov2"],
        iterations=40,
        device="cpu",
        output_path=str(tmp_path / "mem" / "elsewhere"),
    )
    data, cfg, out = resolve_goal(goal, params(tmp_path, preset="paper", iterations=7))
    assert data == tmp_path / "rec" / "rec_1" and out == tmp_path / "mem" / "elsewhere"
    assert cfg.features == [FeatureSpec("clip", 8, 0.9), FeatureSpec("dinov2")]
    assert (cfg.iterations, cfg.device, cfg.init_points) == (40, "cpu", 100_000)


def test_a_goal_without_data_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="dataset_path or a recording_id"):
        resolve_goal(TrainMemory.Goal(dataset_path=str(tmp_path / "rec" / "no")), params(tmp_path))
    with pytest.raises(InvalidInputError, match="bad feature spec 'clip:x'"):
        resolve_goal(TrainMemory.Goal(features=["clip:x"], recording_id="r"), params(tmp_path))


def test_feedback_is_rate_limited_but_keeps_every_stage_and_the_end():
    sent, now = [], [0.0]
    rate = FeedbackRate(sent.append, 10.0, clock=lambda: now[0])
    reports = [("loading", 0, 5)] + [("training", i, 5) for i in range(1, 6)] + [("done", 5, 5)]
    for stage, step, total in reports:  # all within 20 ms except the last training step
        now[0] += 0.004
        rate(SimpleNamespace(stage=stage, step=step, total=total))
    got = [(p.stage, p.step) for p in sent]
    assert got == [("loading", 0), ("training", 1), ("training", 5), ("done", 5)]
    now[0] += 0.1  # a period later the next step goes out
    rate(SimpleNamespace(stage="done", step=5, total=0))
    assert len(sent) == 5
    with pytest.raises(InvalidInputError, match="feedback_hz"):
        FeedbackRate(sent.append, 0.0)


def test_progress_becomes_feedback():
    p = SimpleNamespace(
        stage="training", step=3, total=40, loss=0.5, psnr=21.0, num_gaussians=9, eta_s=1.5
    )
    fb = feedback_msg(p)
    got = (fb.stage, fb.step, fb.total, fb.loss, fb.psnr, fb.num_gaussians, fb.eta_seconds)
    assert got == ("training", 3, 40, 0.5, 21.0, 9, 1.5)


@pytest.mark.parametrize(
    "goal, match",
    [
        ({"recording_id": "../outside"}, "bad recording_id"),
        ({"recording_id": "a/b"}, "bad recording_id"),
        ({"recording_id": "x" * 200}, "bad recording_id"),
        ({"dataset_path": "/etc"}, "outside the allowed folders"),
        ({"recording_id": "r", "output_path": "/tmp/m3_elsewhere"}, "outside the allowed"),
        ({"recording_id": "r", "output_path": "../mem_sibling"}, "outside the allowed"),
        ({"recording_id": "r", "output_path": "."}, "outside the allowed"),  # memories_dir itself
    ],
)
def test_paths_and_ids_from_a_goal_are_confined_to_the_trusted_folders(tmp_path, goal, match):
    with pytest.raises(InvalidInputError, match=match):
        resolve_goal(TrainMemory.Goal(**goal), params(tmp_path))


def test_an_untrusted_dataset_path_falls_back_to_the_streamed_recording(tmp_path):
    """The collector sends its own folder too; on another host (or outside the trusted
    folders) the trainer uses the keyframes streamed into recordings_dir instead."""
    other = tmp_path / "collector_side" / "walk"
    other.mkdir(parents=True)
    said: list[str] = []
    goal = TrainMemory.Goal(dataset_path=str(other), recording_id="walk")
    data, _, out = resolve_goal(goal, params(tmp_path), said.append)
    assert data == tmp_path / "rec" / "walk" and out == tmp_path / "mem" / "walk"
    assert "not in a trusted folder" in said[0]


def test_a_symlink_out_of_the_memories_folder_is_refused(tmp_path):
    (tmp_path / "mem").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "mem" / "link").symlink_to(tmp_path / "outside")
    goal = TrainMemory.Goal(recording_id="r", output_path=str(tmp_path / "mem" / "link" / "m"))
    with pytest.raises(InvalidInputError, match="outside the allowed"):
        resolve_goal(goal, params(tmp_path))
