"""Navigation bridge: grounding result -> stand-off goal -> Nav2 or /goal_pose.

Send a std_msgs/String on ``~/command`` ("go to the espresso", or just "espresso"): the
bridge strips the verb (``m3_core.navigation.command_target``), calls the memory server's
GroundObject (waiting at most ``ground_timeout`` seconds), takes the best object, computes a
stand-off goal facing it (``m3_core.navigation``), and sends it as a Nav2 ``NavigateToPose``
goal when that action server exists (nav2_msgs importable; ``m3_ros.nav2_goal`` reports
the outcome), else publishes ``geometry_msgs/PoseStamped`` on ``goal_topic`` (once a subscriber has
matched, waiting at most ``goal_wait_s``: the topic is volatile). A
``m3_ros/GroundedObject`` on ``~/target`` skips the grounding call. The goal keeps off the
ground the memory says is occupied (the memory server's ``~/occupancy`` grid) and is never
behind a wall from the object; the robot's side is taken from odometry, transformed into the
object's frame with tf2 when it is in another frame (``m3_ros.nav_inputs``). Outcomes are
reported on ``~/status``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String

from m3_core.errors import M3Error
from m3_core.navigation import command_target, standoff_goal
from m3_ros.msg import GroundedObject
from m3_ros.nav2_goal import Nav2Goals
from m3_ros.nav_inputs import NavInputs
from m3_ros.node_utils import (
    CLIENT_DEPTH,
    guarded_callback,
    latched_qos,
    run_node,
    service_qos,
)
from m3_ros.srv import GroundObject

PARAMS = {
    "ground_service": "/memory_server/ground_object",
    "goal_topic": "/goal_pose",
    "nav2_action": "navigate_to_pose",  # used when nav2_msgs is importable and the server is up
    "odom_topic": "/odom",  # robot position, to approach from its side
    "occupancy_topic": "/memory_server/occupancy",  # occupied ground; empty: none
    "robot_radius": 0.3,  # a goal keeps this far from occupied ground
    "goal_frame": "",  # empty: the grounded object's frame (the memory's world frame)
    "standoff_distance": 0.8,
    "feature": "",
    "min_score": 0.0,
    "ground_timeout": 15.0,  # seconds to wait for the memory server's answer, in all
    "ground_retry_s": 3.0,  # a reply lost on the way (DDS under load): ask again after this
    "goal_wait_s": 5.0,  # no subscriber on goal_topic yet (discovery): wait this long for one
}


class NavBridge(Node):
    def __init__(self) -> None:
        super().__init__("nav_bridge")
        for name, default in PARAMS.items():
            self.declare_parameter(name, default)
        group = ReentrantCallbackGroup()
        self.client = self.create_client(
            GroundObject,
            self.p("ground_service"),
            callback_group=group,
            qos_profile=service_qos(CLIENT_DEPTH),  # no reply lost behind other clients'
        )
        self.goal_pub = self.create_publisher(PoseStamped, self.p("goal_topic"), 10)
        # latched: a late subscriber (an operator, a test) still reads the last outcomes
        self.status_pub = self.create_publisher(String, "~/status", latched_qos(10))
        self.create_subscription(
            String, "~/command", guarded_callback(self, self.on_command), 10, callback_group=group
        )
        self.create_subscription(
            GroundedObject,
            "~/target",
            guarded_callback(self, self.on_target),
            10,
            callback_group=group,
        )
        self.inputs = NavInputs(self, self.p("odom_topic"), self.p("occupancy_topic"), group)
        self.nav2 = Nav2Goals(self, self.p("nav2_action"), group, self.status)

    def p(self, name: str):
        return self.get_parameter(name).value

    def status(self, text: str) -> None:
        self.get_logger().info(text)
        self.status_pub.publish(String(data=text))

    def on_command(self, msg: String) -> None:
        if not msg.data.strip():
            return self.status("ignored an empty command")
        text = command_target(msg.data)  # M3Error -> logged by guarded_callback
        if not self.client.wait_for_service(timeout_sec=2.0):
            return self.status(f"memory server {self.p('ground_service')} is not available")
        req = GroundObject.Request(
            text=text, feature=self.p("feature"), min_score=self.p("min_score"), max_results=1
        )
        res = self.ground(req)
        if res is None:
            return self.status(f"grounding {text!r}: no answer in {self.p('ground_timeout')} s")
        if res is None or not res.success:
            return self.status(f"grounding {text!r} failed: {res.message if res else 'no reply'}")
        if not res.objects:
            return self.status(f"no {text!r} in memory; no goal sent")
        self.on_target(res.objects[0])

    def ground(self, req: GroundObject.Request):
        """The reply, asking again every ``ground_retry_s`` (GroundObject is safe to repeat)
        until ``ground_timeout``; None if none came."""
        deadline = time.monotonic() + self.p("ground_timeout")
        while (left := deadline - time.monotonic()) > 0:
            future, done = self.client.call_async(req), threading.Event()
            future.add_done_callback(lambda _, d=done: d.set())
            if done.wait(min(left, self.p("ground_retry_s"))):  # the reentrant group serves it
                return future.result()
            self.client.remove_pending_request(future)
        return None

    def wait_for_goal_subscriber(self) -> bool:
        """True once ``goal_topic`` has a matched subscriber, waiting at most ``goal_wait_s``:
        a goal topic is volatile, so a goal published before discovery has matched the nav
        stack's subscription (a nav stack or rviz that has just started) is never received."""
        deadline = time.monotonic() + self.p("goal_wait_s")
        while self.goal_pub.get_subscription_count() == 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def on_target(self, obj: GroundedObject) -> None:
        frame, want = obj.center.header.frame_id, self.p("goal_frame")
        if want and frame and frame != want:
            return self.status(
                f"no goal for {obj.label!r}: it is in {frame!r}, goal_frame is {want!r} "
                "(leave goal_frame empty to use the memory's)"
            )
        c, s = obj.center.pose.position, obj.size
        lo = np.array([c.x - s.x / 2, c.y - s.y / 2, c.z - s.z / 2])
        hi = np.array([c.x + s.x / 2, c.y + s.y / 2, c.z + s.z / 2])
        where = frame or want or "map"
        try:
            goal = standoff_goal(
                lo,
                hi,
                distance=self.p("standoff_distance"),
                robot_xy=self.inputs.robot_xy(where),
                robot_radius=self.p("robot_radius"),
                **self.inputs.ground(where),
            )
        except M3Error as exc:
            return self.status(f"no goal for {obj.label!r}: {exc}")
        pose = PoseStamped()
        pose.header.frame_id = want or frame or "map"
        pose.header.stamp = self.get_clock().now().to_msg()
        pose.pose.position.x, pose.pose.position.y = goal.x, goal.y
        q = pose.pose.orientation
        q.x, q.y, q.z, q.w = goal.quat_xyzw
        if self.nav2.ready():
            self.nav2.send(pose, obj.label)
            via = f"Nav2 {self.p('nav2_action')}"
        else:
            via = self.p("goal_topic")
            if not self.wait_for_goal_subscriber():
                via += " (nothing subscribes to it: the goal is not received)"
            self.goal_pub.publish(pose)
        where = f"x={goal.x:.2f} y={goal.y:.2f} yaw={goal.yaw:.2f}"
        self.status(f"goal for {obj.label!r} ({obj.score:.2f}): {where} via {via}")


def main(args: list[str] | None = None) -> int:
    return run_node(NavBridge, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
