"""What the nav bridge knows about the world besides the object: where the robot is (odometry,
brought into the object's frame with tf2 when it is in another frame and tf2_ros is
importable; else a warning and no robot side) and which ground the memory says is occupied
(the memory server's latched ``nav_msgs/OccupancyGrid``)."""

from __future__ import annotations

import threading

import numpy as np
from nav_msgs.msg import OccupancyGrid, Odometry

from m3_ros import convert
from m3_ros.node_utils import guarded_callback, latched_qos


class NavInputs:
    def __init__(self, node, odom_topic: str, occupancy_topic: str, group=None) -> None:
        self.node, self.lock = node, threading.Lock()
        self.odom: tuple[str, np.ndarray] | None = None  # (frame, [2])
        self.grid: tuple | None = None  # (frame, occupied [M, 2], free [K, 2], cell size)
        node.create_subscription(Odometry, odom_topic, guarded_callback(node, self.on_odom), 10)
        if occupancy_topic:
            node.create_subscription(
                OccupancyGrid,
                occupancy_topic,
                guarded_callback(node, self.on_grid),
                latched_qos(1),
                callback_group=group,
            )
        self.tf_buffer = None
        try:
            import tf2_ros
        except ImportError:
            return
        self.tf_buffer = tf2_ros.Buffer()
        self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, node, spin_thread=False)
        self.tf_errors: tuple = (tf2_ros.TransformException,)

    def on_odom(self, msg: Odometry) -> None:
        p = msg.pose.pose.position
        if np.isfinite([p.x, p.y, p.z]).all():
            with self.lock:
                self.odom = (msg.header.frame_id, np.array([p.x, p.y, p.z]))

    def on_grid(self, msg: OccupancyGrid) -> None:
        occupied, free = convert.grid_cells_from_msg(msg)  # M3Error -> logged, old grid stays
        with self.lock:
            self.grid = (msg.header.frame_id, occupied, free, msg.info.resolution)
        self.node.get_logger().info(
            f"occupancy grid {msg.info.width}x{msg.info.height} in {msg.header.frame_id!r}: "
            f"{len(occupied)} occupied cells"
        )

    def ground(self, frame: str) -> dict:
        """standoff_goal's ``obstacles_xy`` / ``free_xy`` / ``sight_clearance`` in ``frame``:
        the occupied and free ground, one cell; empty when there is no grid or it is in
        another frame."""
        with self.lock:
            grid = self.grid
        if grid is None:
            return {}
        if grid[0] != frame:
            self.node.get_logger().warning(
                f"the occupancy grid is in {grid[0]!r}, the object in {frame!r}: goal placed "
                "without obstacles"
            )
            return {}
        return {"obstacles_xy": grid[1], "free_xy": grid[2], "sight_clearance": grid[3]}

    def robot_xy(self, frame: str) -> np.ndarray | None:
        """The robot's position [2] in ``frame`` (the object's), or None when unknown."""
        with self.lock:
            odom = self.odom
        if odom is None:
            return None
        source, xyz = odom
        if source in ("", frame):
            return xyz[:2]
        log = self.node.get_logger()
        if self.tf_buffer is None:
            log.warning(
                f"odometry is in {source!r} but the object in {frame!r} and tf2_ros is not "
                "installed: the approach side ignores the robot's position"
            )
            return None
        try:
            from rclpy.time import Time

            tf = self.tf_buffer.lookup_transform(frame, source, Time())
        except self.tf_errors as exc:
            log.warning(f"no transform {frame!r} <- {source!r} ({exc}): robot side ignored")
            return None
        m = convert.transform_to_matrix(tf.transform).numpy()  # [4, 4] frame <- source
        return (m[:3, :3] @ xyz + m[:3, 3])[:2]
