"""``TrainMemory`` goals <-> ``m3_core.train``: where the data is, the resolved config, the
output folder, and progress as action feedback (the trainer node's message side)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from m3_core.errors import InvalidInputError
from m3_ros.action import TrainMemory


def resolve_goal(goal: TrainMemory.Goal, p: Callable[[str], object]):
    """(dataset folder, TrainConfig, output folder) for a goal and the trainer's parameters.

    The data is the goal's ``dataset_path`` when it exists on this host, else the streamed
    ``recordings_dir/<recording_id>``. The default output is ``memories_dir/<recording>``:
    one memory per recording, so a re-sent goal resumes and an incremental one grows it."""
    from m3_core.train import FeatureSpec, TrainConfig

    if goal.dataset_path and Path(goal.dataset_path).exists():
        data = Path(goal.dataset_path)
    elif goal.recording_id:
        data = Path(p("recordings_dir")).expanduser() / goal.recording_id
    else:
        raise InvalidInputError("goal needs an existing dataset_path or a recording_id")
    names = list(goal.features) or list(p("features"))
    over = {
        "features": [FeatureSpec.parse(n) for n in names],
        "device": goal.device or p("device"),
        "max_image_size": tuple(p("max_image_size")),
    }
    iters = goal.iterations or p("iterations")
    if iters:
        over["iterations"] = int(iters)
    cfg = TrainConfig.small_scene(**over) if p("preset") == "small" else TrainConfig(**over)
    out = Path(goal.output_path or Path(p("memories_dir")).expanduser() / data.name)
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


class TrainingRequester:
    """The collector's side: send a goal for a recording when enough keyframes exist, and log
    the trainer's answer when it comes (the service call returns at once)."""

    def __init__(self, node, action_name: str) -> None:
        from rclpy.action import ActionClient

        self.node, self.action_name = node, action_name
        self.client = ActionClient(node, TrainMemory, action_name)

    def request(self, goal: TrainMemory.Goal, have: int, need: int) -> tuple[bool, str]:
        """(accepted for sending, message) for ``have`` keyframes of the ``need``ed."""
        if have < need:
            return False, f"only {have} keyframes; need {need}"
        if not self.client.server_is_ready():
            return False, f"trainer action {self.action_name} is not available"
        self.client.send_goal_async(goal).add_done_callback(self._on_goal_response)
        return True, f"training requested on {have} keyframes of {goal.recording_id}"

    def _on_goal_response(self, future) -> None:
        log = self.node.get_logger()
        handle = future.result()
        if handle is None or not handle.accepted:
            log.warning("the trainer rejected the training goal (busy?)")
            return
        handle.get_result_async().add_done_callback(
            lambda f: log.info(f"training finished: {f.result().result.message}")
        )
