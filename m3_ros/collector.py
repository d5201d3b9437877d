"""Collector: camera + depth + camera info + pose -> keyframes -> nerfstudio dataset (+ stream).

Images (raw or compressed), optional depth, CameraInfo and the camera pose are paired by
timestamp within ``slop`` seconds (``m3_ros.camera_inputs``: message_filters when importable,
else the equivalent ``m3_ros.sync``). The pose is world <- base (Odometry / PoseStamped) times
base <- camera optical (``camera_extrinsic``, x y z qx qy qz qw; the default looks along base
+x), or straight from tf2 with ``pose_source: tf``. Keyframes (``m3_core.data.keyframes``:
motion and blur gates) are undistorted to pinhole with their CameraInfo (plumb_bob,
rational_polynomial, equidistant; ``image_rectified`` for image_rect topics), written
atomically to ``output_dir/recording_id`` (reopening resumes) and streamed on ``~/keyframes``
(``m3_ros.keyframe_io``). ``~/start_training`` (std_srvs/Trigger) sends a TrainMemory goal
once enough keyframes exist, and re-sends it if it is lost (``m3_ros.train_request``).
``~/status`` (CollectorStatus, latched) counts images received, paired, rejected and keyframes
written, and says what became of the training request.
"""

from __future__ import annotations

from pathlib import Path

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage
from std_srvs.srv import Trigger

from m3_core.data.keyframes import KeyframePolicy, KeyframeSelector
from m3_core.data.undistort import RectifierCache
from m3_core.errors import InvalidInputError
from m3_ros import convert
from m3_ros.action import TrainMemory
from m3_ros.camera_inputs import CameraInputs
from m3_ros.keyframe_io import KeyframeJob, KeyframeSink, check_frame, choose_recording, rectify
from m3_ros.msg import CollectorStatus, Keyframe
from m3_ros.node_utils import declare_params, latched_qos, run_node
from m3_ros.train_request import RequestPolicy, TrainingRequester
from m3_ros.trust import check_id

PARAMS = {
    "image_topic": "/camera/image_raw",
    "image_transport": "raw",  # raw | compressed (subscribes <image_topic>/compressed)
    "depth_topic": "",  # empty: no depth
    "depth_scale": 0.001,  # metres per unit of 16UC1 depth
    "camera_info_topic": "/camera/camera_info",
    "image_rectified": False,  # true for image_rect topics: intrinsics from P, no undistortion
    "pose_source": "topic",  # topic (pose_topic + camera_extrinsic) | tf (tf2 lookup)
    "pose_topic": "/odom",
    "pose_type": "odometry",  # odometry | pose_stamped
    "camera_extrinsic": [0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5],  # base <- camera optical
    "world_frame": "map",  # tf: the fixed frame; topic: used when the pose has no frame_id
    "camera_frame": "",  # tf: camera optical frame; empty: the image's header.frame_id
    "tf_timeout": 0.2,  # seconds to wait for a transform at the image time
    "sync": "auto",  # auto (message_filters when importable) | message_filters | builtin
    "sensor_qos": "best_effort",  # best_effort (WiFi, any publisher) | reliable (no loss)
    "slop": 0.05,
    "max_delay": 0.5,  # builtin pairing: seconds an image waits for its partners (reliable
    # DDS may resend a lost message seconds later: raise it with sensor_qos reliable)
    "queue_size": 30,
    "output_dir": "recordings",
    "recording_id": "",  # empty: a recent rec_* (respawn after a crash) or a new rec_<time>
    "resume_window_s": 300.0,  # with recording_id empty: continue a recording this fresh
    "min_translation": 0.15,
    "min_rotation_deg": 10.0,
    "blur_ratio": 0.5,
    "stream_keyframes": True,
    "keyframe_history": 300,  # keyframes kept for late-joining trainers (transient local)
    "min_keyframes": 10,
    "trainer_action": "/trainer/train_memory",
    "goal_timeout_s": 10.0,  # training request: the trainer must accept or reject within this
    "progress_timeout_s": 900.0,  # ... and send feedback or a result within this, else re-sent
    "training_retries": 3,  # re-sends of a lost / unanswered / rejected goal
    "retry_delay_s": 5.0,
    "shared_filesystem": True,  # send dataset_path too (trainer on this host)
    "incremental": True,  # later trainings grow the recording's memory with new keyframes
    "status_period": 0.5,  # seconds between ~/status updates (CollectorStatus, when changed)
}


class Collector(Node):
    def __init__(self) -> None:
        super().__init__("collector")
        declare_params(self, PARAMS, read_only=("output_dir", "recording_id"))
        p = self.p
        if not p("status_period") > 0:
            raise InvalidInputError(f"status_period must be > 0 s: {p('status_period')}")
        self.inputs = CameraInputs(self, p, self.on_frame)  # bad parameters fail before disk
        out = Path(p("output_dir")).expanduser()
        rec = check_id(p("recording_id"), "recording_id") if p("recording_id") else ""
        self.recording_id = choose_recording(out, rec, p("resume_window_s"))
        self.rectifiers = RectifierCache()  # distorted lenses -> pinhole keyframes
        self.selector = KeyframeSelector(
            KeyframePolicy(p("min_translation"), p("min_rotation_deg"), p("blur_ratio"))
        )
        pub = self.create_publisher(Keyframe, "~/keyframes", latched_qos(p("keyframe_history")))
        self.sink = KeyframeSink(
            out / self.recording_id,
            self.recording_id,
            self.get_logger(),
            pub.publish if p("stream_keyframes") else None,
            p("queue_size"),
        )
        policy = RequestPolicy(
            p("goal_timeout_s"), p("progress_timeout_s"), p("training_retries"), p("retry_delay_s")
        )
        self.trainer = TrainingRequester(self, p("trainer_action"), policy)
        self.create_service(Trigger, "~/start_training", self.on_start_training)
        self.status_pub = self.create_publisher(CollectorStatus, "~/status", latched_qos(1))
        self.last_counts: dict | None = None
        self.create_timer(p("status_period"), self.publish_status)
        self.get_logger().info(
            f"recording to {self.sink.writer.root} ({len(self.sink)} frames so far; "
            f"pairing: {self.inputs.backend}, pose: {p('pose_source')})"
        )

    def p(self, name: str):
        return self.get_parameter(name).value

    def on_frame(self, image, info, depth, c2w, world_frame: str) -> None:
        """Convert + select here (cheap); writes and streaming go to the sink's thread.
        Raises M3Error on a bad message (logged and skipped by CameraInputs)."""
        if isinstance(image, CompressedImage):
            rgb = convert.compressed_to_rgb(image)
        else:
            rgb = convert.image_to_rgb(image)
        depth_m = None if depth is None else convert.depth_to_metres(depth, self.p("depth_scale"))
        rect = check_frame(rgb, depth_m, info, self.rectifiers, self.p("image_rectified"))
        keep, _ = self.selector.consider(c2w, rgb)
        if keep:  # undistort only what is kept
            rgb, depth_m, camera, remapped = rectify(rgb, depth_m, info, c2w, rect)
            job = KeyframeJob(rgb, camera, depth_m, image, info, world_frame, remapped)
            self.sink.put(job)

    def publish_status(self) -> None:
        counts = {**self.inputs.counts(), **self.sink.counts(), **self.trainer.status()}
        if counts == self.last_counts:
            return
        lost = counts["frames_unpaired"] - (self.last_counts or {}).get("frames_unpaired", 0)
        if lost > 0:
            self.get_logger().warning(
                f"{lost} image(s) left unpaired ({counts['frames_unpaired']} in all): no camera "
                "info / depth / pose within slop, or not within max_delay"
            )
        self.last_counts = counts
        msg = CollectorStatus(recording_id=self.recording_id, **counts)
        msg.dataset_path = str(self.sink.writer.root.resolve())
        msg.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)

    def destroy_node(self) -> None:
        if hasattr(self, "sink"):  # absent when a bad parameter stopped __init__
            self.sink.close()
        super().destroy_node()

    def on_start_training(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        goal = TrainMemory.Goal(recording_id=self.recording_id, incremental=self.p("incremental"))
        if self.p("shared_filesystem"):
            goal.dataset_path = str(self.sink.writer.root.resolve())
        res.success, res.message = self.trainer.request(
            goal, len(self.sink), self.p("min_keyframes")
        )
        return res


def main(args: list[str] | None = None) -> int:
    return run_node(Collector, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
