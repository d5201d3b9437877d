"""``TrainMemory`` goals <-> ``m3_core.train``: where the data is, the resolved config, the
output folder, progress as action feedback, and the optional 3DGS PLY beside a finished
memory (the trainer node's message side; the collector's side is ``m3_ros.train_request``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from m3_core.errors import InvalidInputError, M3Error
from m3_ros.action import TrainMemory
from m3_ros.trust import check_id, confine

PRESETS = ("auto", "small", "paper")


def resolve_goal(goal: TrainMemory.Goal, p: Callable[[str], object], log=None):
    """(dataset folder, config, output folder) for a goal and the trainer's parameters. The
    config is a TrainConfig for the presets "small" / "paper", and for "auto" the overrides
    that ``train_memory`` sizes to the device and the dataset (``TrainConfig.sized_for``).

    A goal arrives over DDS, so nothing in it is trusted: ``recording_id`` must be a plain
    name (``m3_core.names.SAFE_NAME``); ``dataset_path`` is used only when it exists inside
    ``recordings_dir`` or one of ``dataset_roots`` (else the streamed
    ``recordings_dir/<recording_id>``, or a refusal); ``output_path`` must lie inside
    ``memories_dir``. The default output is ``memories_dir/<recording>``: one memory per
    recording, so a re-sent goal resumes and an incremental one grows it."""
    from m3_core.train import FeatureSpec, TrainConfig

    recordings = Path(p("recordings_dir")).expanduser()
    data_roots = [recordings, *p("dataset_roots")]
    rec = check_id(goal.recording_id, "recording_id") if goal.recording_id else ""
    data = None
    if goal.dataset_path:
        try:
            data = confine(goal.dataset_path, data_roots, "dataset_path", inside=True)
        except InvalidInputError:
            if not rec:
                raise
            if log is not None:
                log(f"dataset_path {goal.dataset_path!r} is not in a trusted folder: using {rec}")
        if data is not None and not data.is_dir():
            data = None
    if data is None:
        if not rec:
            raise InvalidInputError("goal needs an existing dataset_path or a recording_id")
        data = recordings.resolve() / rec
    names = list(goal.features) or list(p("features"))
    over = {
        "features": [FeatureSpec.parse(n) for n in names],
        "device": goal.device or p("device"),
        "max_image_size": tuple(p("max_image_size")),
    }
    iters = goal.iterations or p("iterations")
    if iters:
        over["iterations"] = int(iters)
    preset = p("preset")
    if preset not in PRESETS:
        raise InvalidInputError(f"trainer preset must be one of {PRESETS}, got {preset!r}")
    if preset == "auto":  # overrides, sized once the dataset is loaded (train_memory)
        cfg: TrainConfig | dict = over
    else:
        cfg = TrainConfig.small_scene(**over) if preset == "small" else TrainConfig(**over)
    memories = Path(p("memories_dir")).expanduser()
    if goal.output_path:
        out = confine(goal.output_path, [memories], "output_path", inside=True)
    else:
        out = memories.resolve() / check_id(data.name, "dataset folder name")
    return data, cfg, out


def feedback_msg(progress) -> TrainMemory.Feedback:
    """``m3_core.train`` progress -> action feedback (stage, step, loss, PSNR, Gaussians, ETA)."""
    return TrainMemory.Feedback(
        stage=progress.stage,
        step=progress.step,
        total=progress.total,
        loss=progress.loss,
        psnr=progress.psnr,
        num_gaussians=progress.num_gaussians,
        eta_seconds=progress.eta_s,
    )


class FeedbackRate:
    """Passes progress on to ``send`` at most ``max_hz`` times a second, and always when the
    stage changes or at the last step: a GPU at 100 steps/s would otherwise publish 100
    feedback messages a second to every client. ``clock``: seconds, monotonic."""

    def __init__(
        self, send: Callable[[object], object], max_hz: float, clock=time.monotonic
    ) -> None:
        if not max_hz > 0:
            raise InvalidInputError(f"feedback_hz must be > 0, got {max_hz}")
        self.send, self.period, self.clock = send, 1.0 / max_hz, clock
        self.stage: str | None = None
        self.last = -math.inf

    def __call__(self, progress) -> None:
        now = self.clock()
        last_step = progress.total and progress.step >= progress.total
        if progress.stage != self.stage or last_step or now - self.last >= self.period:
            self.stage, self.last = progress.stage, now
            self.send(progress)


PLY_NAME = "gaussians.ply"  # written beside memory.json when the trainer's export_ply is on


def export_ply_beside(
    memory, out: str | Path, log: Callable[[str], object] | None = None
) -> Path | None:
    """Write ``out/gaussians.ply`` (what ``m3 export`` writes: standard 3DGS properties, the
    world frame in the header); the path, or None after logging why it failed (the memory
    itself is saved and good, so the goal still succeeds)."""
    from m3_core.memory.export import write_memory_ply

    try:
        return write_memory_ply(memory, Path(out) / PLY_NAME)
    except (M3Error, OSError) as exc:
        if log is not None:
            log(f"could not write {Path(out) / PLY_NAME}: {exc}")
        return None
