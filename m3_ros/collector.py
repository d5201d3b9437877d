"""Collector: camera + depth + camera info + pose -> keyframes -> nerfstudio dataset (+ stream).

Images (raw or compressed), optional depth, CameraInfo and the robot pose (Odometry or
PoseStamped) are paired by timestamp (``message_filters`` policy, or the equivalent
``m3_ros.sync`` when it is not importable) within ``slop`` seconds. The camera pose is
world<-base (the pose message) times base<-camera_optical (``camera_extrinsic``, x y z qx qy
qz qw; the default looks along base +x). Keyframes (``m3_core.data.keyframes``) are written
atomically to ``output_dir/recording_id`` (reopening resumes) and streamed on ``~/keyframes``.
``~/start_training`` (std_srvs/Trigger) sends a TrainMemory goal once enough keyframes exist.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from m3_core.data.keyframes import KeyframePolicy, KeyframeSelector
from m3_core.data.transforms import TransformsWriter
from m3_core.errors import M3Error
from m3_core.types import pose_matrix
from m3_ros import convert
from m3_ros.action import TrainMemory
from m3_ros.msg import Keyframe
from m3_ros.node_utils import keyframe_qos, run_node
from m3_ros.sync import NearestTimeSync

PARAMS = {
    "image_topic": "/camera/image_raw",
    "image_transport": "raw",  # raw | compressed (subscribes <image_topic>/compressed)
    "depth_topic": "",  # empty: no depth
    "depth_scale": 0.001,  # metres per unit of 16UC1 depth
    "camera_info_topic": "/camera/camera_info",
    "pose_topic": "/odom",
    "pose_type": "odometry",  # odometry | pose_stamped
    "camera_extrinsic": [0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5],  # base <- camera optical
    "slop": 0.05,
    "queue_size": 30,
    "output_dir": "recordings",
    "recording_id": "",  # empty: rec_<date>_<time>
    "min_translation": 0.15,
    "min_rotation_deg": 10.0,
    "blur_ratio": 0.5,
    "stream_keyframes": True,
    "keyframe_history": 300,  # keyframes kept for late-joining trainers (transient local)
    "min_keyframes": 10,
    "trainer_action": "/trainer/train_memory",
    "shared_filesystem": True,  # send dataset_path too (trainer on this host)
}


def stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class Collector(Node):
    def __init__(self) -> None:
        super().__init__("collector")
        for name, default in PARAMS.items():
            self.declare_parameter(name, default)
        p = self.p
        self.recording_id = p("recording_id") or time.strftime("rec_%Y%m%d_%H%M%S")
        self.writer = TransformsWriter(Path(p("output_dir")).expanduser() / self.recording_id)
        self.selector = KeyframeSelector(
            KeyframePolicy(p("min_translation"), p("min_rotation_deg"), p("blur_ratio"))
        )
        ext = p("camera_extrinsic")
        self.base_to_cam = pose_matrix(ext[:3], ext[3:], what="camera_extrinsic")
        has_depth = bool(p("depth_topic"))
        names = ["info", "pose"] + (["depth"] if has_depth else [])
        self.sync = NearestTimeSync(
            names, self.on_synced, slop=p("slop"), queue_size=p("queue_size")
        )
        # sensor-data QoS (best effort) with a queue deep enough for bursts
        qos = QoSProfile(depth=p("queue_size"), reliability=QoSReliabilityPolicy.BEST_EFFORT)
        if p("image_transport") == "compressed":
            topic = p("image_topic").rstrip("/") + "/compressed"
            self.create_subscription(CompressedImage, topic, self.on_image, qos)
        else:
            self.create_subscription(Image, p("image_topic"), self.on_image, qos)
        self.create_subscription(CameraInfo, p("camera_info_topic"), self.feed("info"), qos)
        pose_cls = Odometry if p("pose_type") == "odometry" else PoseStamped
        self.create_subscription(pose_cls, p("pose_topic"), self.feed("pose"), 50)
        if has_depth:
            self.create_subscription(Image, p("depth_topic"), self.feed("depth"), qos)
        self.keyframe_pub = self.create_publisher(
            Keyframe, "~/keyframes", keyframe_qos(p("keyframe_history"))
        )
        self.trainer = ActionClient(self, TrainMemory, p("trainer_action"))
        self.create_service(Trigger, "~/start_training", self.on_start_training)
        self.jobs: queue.Queue = queue.Queue(maxsize=p("queue_size"))
        self.worker = threading.Thread(target=self._write_loop, daemon=True)
        self.worker.start()
        self.get_logger().info(
            f"recording to {self.writer.root} ({len(self.writer)} frames so far)"
        )

    def p(self, name: str):
        return self.get_parameter(name).value

    def feed(self, name: str):
        return lambda msg: self.sync.add(name, stamp_s(msg.header), msg)

    def on_image(self, msg) -> None:
        self.sync.add_primary(stamp_s(msg.header), msg)

    def on_synced(self, stamp: float, image, info, pose, depth=None) -> None:
        """Convert + select here (cheap); disk writes and streaming go to the writer thread,
        so a slow disk never stalls the subscriptions."""
        try:
            if isinstance(image, CompressedImage):
                rgb = convert.compressed_to_rgb(image)
            else:
                rgb = convert.image_to_rgb(image)
            body = pose.pose.pose if isinstance(pose, Odometry) else pose.pose
            c2w = convert.pose_to_matrix(body) @ self.base_to_cam
            camera = convert.camera_from_info(info, c2w)
            depth_m = None
            if depth is not None:
                depth_m = convert.depth_to_metres(depth, self.p("depth_scale"))
            keep, _ = self.selector.consider(c2w, rgb)
        except M3Error as exc:  # a bad message is logged and skipped, never fatal
            self.get_logger().warning(f"skipped a frame at t={stamp:.3f}: {exc}")
            return
        if keep:
            try:
                self.jobs.put_nowait((rgb, camera, depth_m, image, info, pose, depth, c2w))
            except queue.Full:
                self.get_logger().warning("writer is behind: dropped a keyframe")

    def _write_loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            rgb, camera, depth_m, image, info, pose, depth, c2w = job
            try:
                frame = self.writer.add_frame(None, rgb, camera, depth_m)
            except (M3Error, OSError) as exc:
                self.get_logger().error(f"could not write a keyframe: {exc}")
                continue
            self.get_logger().info(f"keyframe {frame.name} ({len(self.writer)} total)")
            if self.p("stream_keyframes"):
                msg = self._keyframe_msg(frame.name, image, info, pose, depth, c2w)
                self.keyframe_pub.publish(msg)

    def destroy_node(self) -> None:
        self.jobs.put(None)
        self.worker.join(timeout=10)
        super().destroy_node()

    def _keyframe_msg(self, name, image, info, pose, depth, c2w) -> Keyframe:
        msg = Keyframe(recording_id=self.recording_id, name=name, camera_info=info)
        msg.header.stamp = image.header.stamp
        msg.header.frame_id = pose.header.frame_id or "map"
        if isinstance(image, CompressedImage):
            msg.image = image
        else:
            msg.image = convert.rgb_to_compressed(convert.image_to_rgb(image), "png")
        if depth is not None:
            msg.depth = depth
        msg.camera_pose = convert.matrix_to_pose_msg(c2w)
        return msg

    def on_start_training(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        n = len(self.writer)
        if n < self.p("min_keyframes"):
            res.success, res.message = False, f"only {n} keyframes; need {self.p('min_keyframes')}"
            return res
        if not self.trainer.server_is_ready():
            res.success, res.message = (
                False,
                f"trainer action {self.p('trainer_action')} is not available",
            )
            return res
        goal = TrainMemory.Goal(recording_id=self.recording_id)
        if self.p("shared_filesystem"):
            goal.dataset_path = str(self.writer.root.resolve())
        self.trainer.send_goal_async(goal)
        res.success, res.message = (
            True,
            f"training requested on {n} keyframes of {self.recording_id}",
        )
        return res


def main(args: list[str] | None = None) -> int:
    return run_node(Collector, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
