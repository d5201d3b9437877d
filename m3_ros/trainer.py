"""Trainer: the ``TrainMemory`` action server around ``m3_core.train``.

Runs where the GPU is (or on CPU for small scenes), as its own process, possibly on another
host: keyframes streamed by the collector on ``keyframe_topic`` are written to
``recordings_dir/<recording_id>`` here (no shared filesystem needed); a goal names either a
local ``dataset_path`` or a ``recording_id``. Feedback carries stage, step, loss, PSNR,
Gaussian count and ETA; cancelling stops after the current step and keeps a resumable
checkpoint. The default output is ``memories_dir/<recording>``: sending the goal again resumes
a cancelled run, and ``incremental`` grows the memory with keyframes recorded since; with
``export_ply`` a standard 3DGS ``gaussians.ply`` is written beside it (viewers). Goals
arrive over DDS and are untrusted: their data and output must lie in the trusted folders
(``m3_ros.train_goal``), and a goal sent while one runs is rejected in the goal callback. On
success the memory is announced on ``~/memory`` (``m3_ros.memory_delivery``): memory servers
on any host receive it, also ones that start later. With ``live`` on, each streamed keyframe
is also folded into a live memory that is announced every ``live_publish_every`` keyframes,
before any training (``m3_ros.live_worker``); once the recording has a trained memory, a live
snapshot is announced only while it measures better on held-out keyframes, and a finished
run of a streamed recording is announced only if it measures at least as well as the live
memory (the worker decides, logging both numbers).
"""

from __future__ import annotations

import math
import threading
import traceback
from pathlib import Path

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from m3_core.errors import M3Error
from m3_ros.action import TrainMemory
from m3_ros.cpus import cpu_set, pin_process
from m3_ros.keyframe_io import KeyframeReceiver
from m3_ros.memory_delivery import archive_msg, memory_publisher
from m3_ros.msg import Keyframe
from m3_ros.node_utils import declare_params, guarded_callback, latched_qos, run_node
from m3_ros.train_goal import FeedbackRate, export_ply_beside, feedback_msg, resolve_goal

PARAMS = {
    "recordings_dir": "recordings",  # streamed keyframes land here (goals' data: only here
    "dataset_roots": [""],  # ... or in these folders: a goal's dataset_path elsewhere is refused)
    "memories_dir": "memories",  # every output folder is inside this one
    "keyframe_topic": "/collector/keyframes",
    "keyframe_history": 300,  # must not exceed the collector's
    "features": ["effnet"],  # default feature sources (extracted when missing)
    "weights_dir": "",  # local model weights for extractors (never downloaded)
    "preset": "auto",  # auto (sized to the device and the recording, as m3 train) | small | paper
    "iterations": 0,  # 0: the preset's
    "device": "auto",
    "max_image_size": [640, 480],
    "publish_memory": True,  # announce finished memories on ~/memory (servers load them)
    "export_ply": False,  # also write MEM/gaussians.ply (standard 3DGS PLY) after training
    "live": False,  # fold streamed keyframes into a live memory (memories_dir/<rec>/live)
    "live_publish_every": 5,  # keyframes per announced live snapshot
    "live_publish_idle_s": 3.0,  # ... or this long after the stream pauses
    "live_features": [""],  # [""]: the trainer's features (name[:channels[:threshold]])
    "feedback_hz": 10.0,  # TrainMemory feedback at most this often (and at every new stage)
    "cpus": "",  # run on these CPUs only, e.g. "1-3" (keep the memory server's core free)
}


class Trainer(Node):
    def __init__(self) -> None:
        super().__init__("trainer")
        trusted = ("recordings_dir", "dataset_roots", "memories_dir")  # no peer may move them
        declare_params(self, PARAMS, read_only=(*trusted, "cpus"))
        pin_process(cpu_set(self.p("cpus")))  # bad text: exit 2 with one line
        self.busy = threading.Lock()  # taken when a goal is accepted, released when it ends
        self.receiver = KeyframeReceiver(self.p("recordings_dir"), self.get_logger())
        self.live = self._live_worker() if self.p("live") else None
        self.create_subscription(
            Keyframe,
            self.p("keyframe_topic"),
            guarded_callback(self, self.on_keyframe),
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

    def _live_worker(self):
        from m3_ros.live_worker import LiveWorker

        return LiveWorker(
            self.p("recordings_dir"),
            self.p("memories_dir"),
            [f for f in self.p("live_features") if f] or list(self.p("features")),
            self._notify,
            self.get_logger(),
            publish_every=self.p("live_publish_every"),
            idle_publish_s=self.p("live_publish_idle_s"),
            device=self.p("device"),
            weights_dir=self.p("weights_dir") or None,
            max_image_size=tuple(self.p("max_image_size")),
        )

    def on_keyframe(self, msg: Keyframe) -> None:
        self.receiver.on_keyframe(msg)
        writer = self.receiver.writers.get(msg.recording_id)
        if self.live is not None and writer is not None and msg.name in writer:
            self.live.submit(msg.recording_id)  # the worker folds what it has not yet

    def on_goal(self, goal: TrainMemory.Goal) -> GoalResponse:
        if not self.busy.acquire(blocking=False):  # here, not in execute: no second acceptance
            self.get_logger().warning("rejected a TrainMemory goal: already training")
            return GoalResponse.REJECT
        what = goal.dataset_path or f"recording {goal.recording_id!r}"
        self.get_logger().info(f"accepted a TrainMemory goal for {what}")
        return GoalResponse.ACCEPT

    def execute(self, goal_handle) -> TrainMemory.Result:
        result = TrainMemory.Result(psnr=math.nan)
        try:
            result, out, rec = self._train(goal_handle, result)
        finally:
            self.busy.release()
        if out is not None and rec and self.live is not None:
            self.live.trained(rec, out)  # announced unless the live memory measures better
        elif out is not None:
            self._notify(str(out))
        return result

    def _train(self, goal_handle, result):
        """(result, output folder to announce or None, the streamed recording it was trained
        from or ""); the goal handle is finished here."""
        from m3_core.train.pipeline import train_memory

        try:
            data, cfg, out = resolve_goal(goal_handle.request, self.p, self.get_logger().warning)
            res = train_memory(
                data,
                cfg,
                out,
                FeedbackRate(
                    lambda progress: goal_handle.publish_feedback(feedback_msg(progress)),
                    self.p("feedback_hz"),
                ),
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
            return result, None, ""
        result.memory_path, result.num_gaussians = str(out), res.memory.num_gaussians
        result.psnr = float(res.metrics.get("test_psnr", math.nan))
        if res.cancelled:
            result.success, result.message = False, f"cancelled at step {res.step}; resumable"
            goal_handle.canceled()
            return result, None, ""
        if self.p("export_ply"):
            export_ply_beside(res.memory, out, self.get_logger().error)
        result.success, result.message = True, f"trained {res.step} steps"
        self.get_logger().info(f"memory ready at {out} (test PSNR {result.psnr:.2f} dB)")
        goal_handle.succeed()
        rec = goal_handle.request.recording_id
        streamed = Path(self.p("recordings_dir")).expanduser() / rec
        return result, out, rec if rec and Path(data).resolve() == streamed.resolve() else ""

    def _notify(self, path: str, name: str = "") -> None:
        """Announce the memory in ``path`` (as ``name``; default: the folder's name)."""
        if not self.p("publish_memory"):
            return
        try:
            msg = archive_msg(path, self.get_clock().now().to_msg())
            msg.name = name or msg.name
            self.memory_pub.publish(msg)
        except (M3Error, OSError) as exc:
            self.get_logger().error(f"could not announce the memory at {path}: {exc}")


def main(args: list[str] | None = None) -> int:
    return run_node(Trainer, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
