"""The collector's inputs: camera (+ depth, camera info) streams paired by time, and the pose.

Pairing: ``message_filters.ApproximateTimeSynchronizer`` when importable (a ROS 2 install)
or the equivalent, tested ``m3_ros.sync.NearestTimeSync`` (``sync``: auto | message_filters |
builtin). Pose: ``topic`` pairs an Odometry / PoseStamped of the robot base with each image
and applies the static ``camera_extrinsic`` (base <- camera optical); ``tf`` asks tf2 for
``world_frame <- camera frame`` (the image's frame_id, or ``camera_frame``) at the image time.
Every pose comes back as a [4, 4] camera-optical -> world matrix.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from m3_core.errors import InvalidInputError, M3Error
from m3_core.types import pose_matrix
from m3_ros import convert
from m3_ros.node_utils import guarded_callback
from m3_ros.sync import NearestTimeSync


def stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def sync_backend(choice: str) -> str:
    """message_filters or builtin, per the ``sync`` parameter (clear error when impossible)."""
    have = importlib.util.find_spec("message_filters") is not None
    if choice == "auto":
        return "message_filters" if have else "builtin"
    if choice == "message_filters" and not have:
        raise InvalidInputError("sync 'message_filters' needs a ROS 2 install; use 'builtin'")
    if choice not in ("message_filters", "builtin"):
        raise InvalidInputError(f"sync must be auto, message_filters or builtin, not {choice!r}")
    return choice


class TfPoses:
    """Camera poses from tf2: ``lookup(frame, stamp) -> [4, 4]`` world <- ``frame``."""

    def __init__(self, node: Node, world_frame: str, timeout: float, buffer=None) -> None:
        from rclpy.duration import Duration

        self.world_frame, self.timeout = world_frame, Duration(seconds=timeout)
        if buffer is None:
            try:
                import tf2_ros
            except ImportError:
                raise InvalidInputError(
                    "pose_source 'tf' needs tf2_ros (a ROS 2 install); use pose_source 'topic'"
                ) from None
            buffer = tf2_ros.Buffer()
            # spin_thread=False: the node's own (multi-threaded) executor serves /tf; a
            # listener thread would take the node away from it (one executor per node)
            self.listener = tf2_ros.TransformListener(buffer, node, spin_thread=False)
            self.errors: tuple = (tf2_ros.TransformException,)
        else:
            self.errors = (LookupError,)  # a stand-in buffer (tests) raises LookupError
        self.buffer = buffer

    def lookup(self, frame: str, stamp) -> torch.Tensor:
        from rclpy.time import Time

        try:
            tf = self.buffer.lookup_transform(
                self.world_frame, frame, Time.from_msg(stamp), timeout=self.timeout
            )
        except self.errors as exc:
            raise InvalidInputError(f"no transform {self.world_frame} <- {frame}: {exc}") from None
        return convert.transform_to_matrix(tf.transform)


class CameraInputs:
    """Subscribes and pairs the streams; calls ``callback(image, info, depth, c2w, frame)``."""

    def __init__(
        self, node: Node, p: Callable[[str], object], callback: Callable, tf: TfPoses | None = None
    ) -> None:
        self.node, self.p, self.callback = node, p, callback
        self.use_tf = p("pose_source") == "tf"
        if p("pose_source") not in ("tf", "topic"):
            raise InvalidInputError(f"pose_source must be topic or tf, not {p('pose_source')!r}")
        ext = p("camera_extrinsic")
        self.base_to_cam = pose_matrix(ext[:3], ext[3:], what="camera_extrinsic")
        if self.use_tf and tf is None:
            tf = TfPoses(node, p("world_frame"), p("tf_timeout"))
        self.tf = tf
        compressed = p("image_transport") == "compressed"
        image_topic = p("image_topic").rstrip("/") + ("/compressed" if compressed else "")
        streams = {
            "image": (CompressedImage if compressed else Image, image_topic),
            "info": (CameraInfo, p("camera_info_topic")),
        }
        if not self.use_tf:
            pose_cls = Odometry if p("pose_type") == "odometry" else PoseStamped
            streams["pose"] = (pose_cls, p("pose_topic"))
        if p("depth_topic"):
            streams["depth"] = (Image, p("depth_topic"))
        self.names = list(streams)
        self.received = self.paired = self.rejected = 0  # images, counted for ~/status
        # sensor-data QoS (best effort; "reliable" for one host or a wired link: large images
        # fragment, and a best-effort reader drops a whole frame for one lost fragment)
        if p("sensor_qos") not in ("best_effort", "reliable"):
            raise InvalidInputError(
                f"sensor_qos must be best_effort or reliable: {p('sensor_qos')!r}"
            )
        reliability = (
            QoSReliabilityPolicy.RELIABLE
            if p("sensor_qos") == "reliable"
            else QoSReliabilityPolicy.BEST_EFFORT
        )
        qos = QoSProfile(depth=p("queue_size"), reliability=reliability)
        self.backend = sync_backend(p("sync"))
        if self.backend == "message_filters":
            import message_filters as mf

            subs = [mf.Subscriber(node, c, t, qos_profile=qos) for c, t in streams.values()]
            subs[0].registerCallback(self._count_image)
            self.sync = mf.ApproximateTimeSynchronizer(subs, p("queue_size"), p("slop"))
            self.sync.registerCallback(lambda *msgs: self.on_paired(dict(zip(self.names, msgs))))
        else:
            self.sync = NearestTimeSync(
                self.names[1:],
                self._on_builtin,
                slop=p("slop"),
                queue_size=p("queue_size"),
                max_delay=p("max_delay"),
            )
            for name, (cls, topic) in streams.items():
                node.create_subscription(cls, topic, guarded_callback(node, self._feed(name)), qos)

    def _count_image(self, msg) -> None:
        self.received += 1

    def _feed(self, name: str):
        if name == "image":

            def on_image(msg) -> None:
                self._count_image(msg)
                self.sync.add_primary(stamp_s(msg.header), msg)

            return on_image
        return lambda msg: self.sync.add(name, stamp_s(msg.header), msg)

    def counts(self) -> dict[str, int]:
        """Images received, paired, pending, unpaired, rejected so far. message_filters
        does not say which images it still holds: there, pending is 0 and unpaired counts
        every image not (yet) paired."""
        pending = len(self.sync.primary) if self.backend == "builtin" else 0
        return {
            "images_received": self.received,
            "frames_paired": self.paired,
            "frames_pending": pending,
            "frames_unpaired": self.received - self.paired - pending,
            "frames_rejected": self.rejected,
        }

    def _on_builtin(self, stamp: float, image, *others) -> None:
        self.on_paired({"image": image, **dict(zip(self.names[1:], others))})

    def on_paired(self, msgs: dict) -> None:
        """Pose for the pair, then the callback; a bad message is logged and skipped."""
        image = msgs["image"]
        self.paired += 1
        try:
            if self.use_tf:
                frame = self.p("camera_frame") or image.header.frame_id
                c2w, world = self.tf.lookup(frame, image.header.stamp), self.p("world_frame")
            else:
                pose = msgs["pose"]
                body = pose.pose.pose if isinstance(pose, Odometry) else pose.pose
                c2w = convert.pose_to_matrix(body) @ self.base_to_cam
                world = pose.header.frame_id or self.p("world_frame")
            self.callback(image, msgs["info"], msgs.get("depth"), c2w, world)
        except M3Error as exc:  # never fatal: the next frame may be fine
            self.rejected += 1
            t = stamp_s(image.header)
            self.node.get_logger().warning(f"skipped a frame at t={t:.3f}: {exc}")
