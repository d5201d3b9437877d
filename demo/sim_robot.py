"""The simulated quadruped: its head camera's walk through the demo room, as the topics a real
robot publishes, live or written to / replayed from a rosbag2 file.

Topics (a robot's usual names; the collector's defaults except ``depth_topic``):

    /camera/image_raw    sensor_msgs/Image rgb8          frame camera_optical_frame
    /camera/depth        sensor_msgs/Image 32FC1 metres  frame camera_optical_frame
    /camera/camera_info  sensor_msgs/CameraInfo          frame camera_optical_frame
    /odom                nav_msgs/Odometry of base_link  frame map (perfect odometry)

All four messages of a frame carry the same stamp. base_link <- camera optical is
:data:`demo.scene.CAMERA_EXTRINSIC` (the collector's default ``camera_extrinsic``), so
odometry + extrinsic gives back the rendered camera pose exactly. Live stamps are the node's
clock at publish time; a bag keeps its stamps (like ``ros2 bag play``).

    python -m demo.sim_robot [--frames 120] [--rate 10] [--size 320 240]   # publish live
    python -m demo.sim_robot --bag walk_bag                               # write a bag
    python -m demo.sim_robot --from-bag walk_bag                          # replay a bag
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from demo import scene
from m3_core.data.raycast import FIRST_OBJECT_ID
from m3_core.types import Camera

TOPICS = {
    "image": ("/camera/image_raw", "sensor_msgs/msg/Image"),
    "depth": ("/camera/depth", "sensor_msgs/msg/Image"),
    "info": ("/camera/camera_info", "sensor_msgs/msg/CameraInfo"),
    "odom": ("/odom", "nav_msgs/msg/Odometry"),
}
CAMERA_FRAME, WORLD_FRAME, BASE_FRAME = "camera_optical_frame", "map", "base_link"


@dataclass
class RawView:
    """What a distorted lens sees instead (:mod:`demo.lens`): published with ``k`` and ``d``."""

    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32 metres
    k: np.ndarray  # [3, 3] raw intrinsics
    d: tuple[float, ...]  # plumb_bob k1 k2 p1 p2 k3


@dataclass
class SimFrame:
    """One rendered view: rgb uint8 [H, W, 3], depth float32 [H, W] (m), the camera (pose =
    optical camera-to-world) and the base_link pose [4, 4] float64 (world <- base); ``raw``:
    the same view through a wide-angle lens, which the robot then publishes instead;
    ``visible``: pixels of each object (by label) in the view (ground truth for the demo)."""

    rgb: np.ndarray
    depth: np.ndarray
    camera: Camera
    base: torch.Tensor
    raw: RawView | None = None
    visible: dict[str, int] = field(default_factory=dict)


def render_walk(
    num_frames: int,
    width: int = 320,
    height: int = 240,
    *,
    seed: int = 0,
    on_frame: Callable[[int, int], None] | None = None,  # (done, total)
    lens: str = "pinhole",  # pinhole | wide (demo.lens.WIDE distortion)
) -> list[SimFrame]:
    """Render the walk of :func:`demo.scene.walk_poses` through the demo room."""
    from demo import lens as lenses

    if lens not in ("pinhole", "wide"):
        raise ValueError(f"lens must be pinhole or wide, not {lens!r}")
    objects = scene.demo_objects()
    frames, k_raw = [], None
    for k, c2w in enumerate(scene.walk_poses(num_frames, seed=seed)):
        cam = scene.camera(c2w, width, height)
        rgb, depth, inst = scene.render(cam, objects)
        k_obj = np.clip(inst.ravel() - FIRST_OBJECT_ID + 1, 0, None)  # 0: no object
        counts = np.bincount(k_obj, minlength=len(objects) + 1)[1:]
        visible = {o.label: int(n) for o, n in zip(objects, counts, strict=True) if n}
        raw = None
        if lens == "wide":
            k_raw = lenses.raw_intrinsics(cam) if k_raw is None else k_raw
            raw = RawView(*lenses.distort_view(rgb, depth, cam, k_raw), k_raw, lenses.WIDE)
        frames.append(SimFrame(rgb, depth, cam, scene.base_pose(c2w), raw, visible))
        if on_frame is not None:
            on_frame(k + 1, num_frames)
    return frames


def to_stamp(t_ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000))


def frame_messages(frame: SimFrame, t_ns: int) -> dict[str, object]:
    """The frame as ROS messages {key of TOPICS: message}, all stamped ``t_ns``."""
    from nav_msgs.msg import Odometry

    from m3_ros import convert

    stamp = to_stamp(t_ns)
    view = frame.raw or frame
    img = convert.array_to_image(view.rgb, "rgb8")
    depth = convert.array_to_image(view.depth.astype(np.float32), "32FC1")
    info = convert.camera_info_msg(frame.camera, CAMERA_FRAME)
    if frame.raw is not None:  # the lens: raw intrinsics + distortion; P unset
        info.k, info.d = frame.raw.k.ravel().tolist(), list(frame.raw.d)
        info.p = [0.0] * 12
    odom = Odometry(child_frame_id=BASE_FRAME)
    odom.pose.pose = convert.matrix_to_pose_msg(frame.base)
    for msg, fid in ((img, CAMERA_FRAME), (depth, CAMERA_FRAME), (info, CAMERA_FRAME)):
        msg.header.frame_id = fid
        msg.header.stamp = stamp
    odom.header.frame_id, odom.header.stamp = WORLD_FRAME, stamp
    return {"image": img, "depth": depth, "info": info, "odom": odom}


def walk_messages(
    frames: list[SimFrame], rate: float, start_ns: int
) -> Iterator[tuple[int, dict[str, object]]]:
    """(stamp ns, messages) per frame, ``1 / rate`` seconds apart from ``start_ns``."""
    for k, f in enumerate(frames):
        t = start_ns + int(round(k * 1e9 / rate))
        yield t, frame_messages(f, t)


class WalkPublisher:
    """Publishers for the TOPICS on an existing rclpy node; ``publish`` sends one frame."""

    def __init__(self, node) -> None:
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import CameraInfo, Image

        types = {"image": Image, "depth": Image, "info": CameraInfo, "odom": Odometry}
        self.node = node
        # reliable, and a history long enough (5 s at 20 Hz) that a message lost on the way
        # can still be resent when the subscriber asks for it again (else it is lost for good)
        depth = 100
        self.pubs = {k: node.create_publisher(types[k], TOPICS[k][0], depth) for k in TOPICS}

    def subscribers(self) -> int:
        return self.pubs["image"].get_subscription_count()

    def publish(self, msgs: dict[str, object]) -> None:
        # pose and info first, the image last: a synchroniser keyed on the image finds the rest
        for key in ("odom", "info", "depth", "image"):
            if key in msgs:
                self.pubs[key].publish(msgs[key])


def publish_frames(
    publisher: WalkPublisher,
    frames: list[SimFrame],
    rate: float,
    on_frame: Callable[[int, int], None] | None = None,
) -> None:
    """Publish the walk live at ``rate`` Hz, stamped with the node's clock."""
    period = 1.0 / rate
    t_next = time.monotonic()
    for k, f in enumerate(frames):
        t_ns = publisher.node.get_clock().now().nanoseconds
        publisher.publish(frame_messages(f, t_ns))
        if on_frame is not None:
            on_frame(k + 1, len(frames))
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))


def replay(
    publisher: WalkPublisher,
    items: Iterable[tuple[int, dict[str, object]]],
    rate_scale: float = 1.0,
    on_frame: Callable[[int], None] | None = None,
) -> int:
    """Publish (stamp ns, messages) items keeping their stamps, paced by the stamp gaps
    (divided by ``rate_scale``). Returns the number of frames sent."""
    t0_bag, t0 = None, time.monotonic()
    n = 0
    for t_ns, msgs in items:
        t0_bag = t_ns if t0_bag is None else t0_bag
        wait = (t_ns - t0_bag) / 1e9 / rate_scale - (time.monotonic() - t0)
        time.sleep(max(0.0, wait))
        publisher.publish(msgs)
        n += 1
        if on_frame is not None:
            on_frame(n)
    return n


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m demo.sim_robot", description=__doc__.split(".")[0])
    p.add_argument("--frames", type=int, default=120, help="frames along the loop")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second")
    p.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"))
    p.add_argument("--bag", help="write the walk to this rosbag2 folder instead of publishing")
    p.add_argument("--from-bag", help="publish the frames of this rosbag2 folder")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a subscriber")
    p.add_argument("--lens", default="pinhole", choices=("pinhole", "wide"), help="camera lens")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from demo import bag

    args = parse_args(argv)
    if args.bag:
        frames = render_walk(args.frames, *args.size, lens=args.lens)
        n = bag.write_bag(args.bag, walk_messages(frames, args.rate, time.time_ns()))
        print(f"wrote {n} frames to {args.bag}")
        return 0
    import rclpy

    rclpy.init()
    node = rclpy.create_node("sim_robot")
    try:
        pub = WalkPublisher(node)
        deadline = time.monotonic() + args.wait
        while pub.subscribers() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        if args.from_bag:
            n = replay(pub, bag.read_bag(args.from_bag))
        else:
            frames = render_walk(args.frames, *args.size, lens=args.lens)
            publish_frames(pub, frames, args.rate)
            n = len(frames)
        print(f"published {n} frames")
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
