"""Trainer: the ``TrainMemory`` action server around ``m3_core.train``.

Runs where the GPU is (or on CPU for small scenes), as its own process, possibly on another
host: keyframes streamed by the collector on ``keyframe_topic`` are written to
``recordings_dir/<recording_id>`` here (no shared filesystem needed); a goal names either a
local ``dataset_path`` or a ``recording_id``. Feedback carries stage, step, loss, PSNR,
Gaussian count and ETA; cancelling stops after the current step and keeps a resumable
checkpoint. The default output is ``memories_dir/<recording>``: sending the goal again resumes
a cancelled run, and ``incremental`` grows the memory with keyframes recorded since. On
success the memory is announced on ``~/memory`` (``m3_ros.memory_delivery``): memory servers
on any host receive it, also ones that start later.
"""

from __future__ import annotations

import math
import threading
import traceback

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from m3_core.errors import M3Error
from m3_ros.action import TrainMemory
from m3_ros.keyframe_io import KeyframeReceiver
from m3_ros.memory_delivery import archive_msg, memory_publisher
from m3_ros.msg import Keyframe
from m3_ros.node_utils import guarded_callback, latched_qos, run_node
from m3_ros.train_goal import feedback_msg, resolve_goal

PARAMS = {
    "recordings_dir": "recordings",  # streamed keyframes land here
    "memories_dir": "memories",  # default output folder parent
    "keyframe_topic": "/collector/keyframes",
    "keyframe_history": 300,  # must not exceed the collector's
    "features": ["effnet"],  # default feature sources (extracted when missing)
    "weights_dir": "",  # local model weights for extractors (never downloaded)
    "preset": "small",  # small (CPU minutes) | paper (30k steps)
    "iterations": 0,  # 0: the preset's
    "device": "auto",
    "max_image_size": [640, 480],
    "publish_memory": True,  # announce finished memories on ~/memory (servers load them)
}


class Trainer(Node):
    def __init__(self) -> None:
        super().__init__("trainer")
        for name, default in PARAMS.items():
            self.declare_parameter(name, default)
        self.busy = threading.Lock()
        self.receiver = KeyframeReceiver(self.p("recordings_dir"), self.get_logger())
        self.create_subscription(
            Keyframe,
            self.p("keyframe_topic"),
            guarded_callback(self, self.receiver.on_keyframe),
            latched_qos(self.p("keyframe_history")),
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self.memory_pub = memory_publisher(self)
        self.server = ActionServer(
            self,
            TrainMemory,
            "~/train_memory",
            execute_callback=self.execute,
            goal_callback=self.on_goal,
            cancel_callback=lambda _: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )

    def p(self, name: str):
        return self.get_parameter(name).value

    def on_goal(self, goal: TrainMemory.Goal) -> GoalResponse:
        if self.busy.locked():
            self.get_logger().warning("rejected a TrainMemory goal: already training")
            return GoalResponse.REJECT
        what = goal.dataset_path or f"recording {goal.recording_id!r}"
        self.get_logger().info(f"accepted a TrainMemory goal for {what}")
        return GoalResponse.ACCEPT

    def execute(self, goal_handle) -> TrainMemory.Result:
        from m3_core.train.pipeline import train_memory

        result = TrainMemory.Result(psnr=math.nan)
        with self.busy:
            try:
                data, cfg, out = resolve_goal(goal_handle.request, self.p)
                res = train_memory(
                    data,
                    cfg,
                    out,
                    lambda progress: goal_handle.publish_feedback(feedback_msg(progress)),
                    lambda: goal_handle.is_cancel_requested,
                    weights_dir=self.p("weights_dir") or None,
                    incremental=goal_handle.request.incremental,
                )
            except Exception as exc:  # user errors and bugs alike: abort the goal, keep serving
                if not isinstance(exc, M3Error):
                    self.get_logger().error(f"training failed:\n{traceback.format_exc()}")
                result.success, result.message = False, f"training failed: {exc}"
                self.get_logger().warning(result.message)
                goal_handle.abort()
                return result
            result.memory_path, result.num_gaussians = str(out), res.memory.num_gaussians
            result.psnr = float(res.metrics.get("test_psnr", math.nan))
            if res.cancelled:
                result.success, result.message = False, f"cancelled at step {res.step}; resumable"
                goal_handle.canceled()
                return result
            result.success, result.message = True, f"trained {res.step} steps"
            self.get_logger().info(f"memory ready at {out} (test PSNR {result.psnr:.2f} dB)")
            goal_handle.succeed()
        self._notify(str(out))
        return result

    def _notify(self, path: str) -> None:
        if not self.p("publish_memory"):
            return
        try:
            self.memory_pub.publish(archive_msg(path, self.get_clock().now().to_msg()))
        except (M3Error, OSError) as exc:
            self.get_logger().error(f"could not announce the memory at {path}: {exc}")


def main(args: list[str] | None = None) -> int:
    return run_node(Trainer, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
