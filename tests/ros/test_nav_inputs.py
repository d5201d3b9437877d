"""The nav bridge uses what the memory knows: goals keep off the occupied ground it publishes
(a box next to a wall: the goal is on the free side, not behind the wall), odometry in
another frame than the object is reported (and transformed when tf2_ros is installed), and a
goal waits for the nav stack to subscribe."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tests.core.test_navigation import box_by_a_wall
from tests.ros.conftest import wait_for

pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import OccupancyGrid, Odometry  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from m3_core.navigation import occupancy_grid  # noqa: E402
from m3_ros import convert  # noqa: E402
from m3_ros.msg import GroundedObject  # noqa: E402
from m3_ros.node_utils import latched_qos  # noqa: E402


def crate(frame: str) -> GroundedObject:
    """The box of box_by_a_wall: x in [1, 1.4], y in [-0.2, 0.2], 0.5 m high."""
    obj = GroundedObject(label="crate", score=0.9)
    obj.center.header.frame_id = frame
    obj.center.pose.position.x, obj.center.pose.position.z = 1.2, 0.25
    obj.center.pose.orientation.w = 1.0
    obj.size.x, obj.size.y, obj.size.z = 0.4, 0.4, 0.5
    return obj


def odom(frame: str, x: float, y: float) -> Odometry:
    msg = Odometry()
    msg.header.frame_id = frame
    msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
    msg.pose.pose.orientation.w = 1.0
    return msg


def test_goal_by_a_box_next_to_a_wall_is_on_the_free_side(spawn, client):
    grid = occupancy_grid(*box_by_a_wall(), resolution=0.05)
    occupied = grid.occupied_xy()
    grid_pub = client.node.create_publisher(
        OccupancyGrid, "/memory_server/occupancy", latched_qos(1)
    )
    grid_pub.publish(convert.occupancy_grid_msg(grid, "odom"))  # latched: before the bridge
    goals = client.collect(PoseStamped, "/goal_pose")
    target = client.node.create_publisher(GroundedObject, "/nav_bridge/target", 10)
    odom_pub = client.node.create_publisher(Odometry, "/odom", 10)
    bridge = spawn("nav_bridge", {"standoff_distance": 0.5, "robot_radius": 0.3})
    wait_for(lambda: "occupancy grid" in bridge.output(), 30, "the grid", bridge)
    wait_for(lambda: odom_pub.get_subscription_count() > 0, 30, "odometry subscription", bridge)
    wait_for(lambda: target.get_subscription_count() > 0, 30, "target subscription", bridge)
    for _ in range(5):  # the robot is behind the wall (its side is +x)
        odom_pub.publish(odom("odom", 2.5, 0.0))
        time.sleep(0.1)
    target.publish(crate("odom"))
    wait_for(lambda: goals, 30, "a goal", bridge)
    g = goals[0].pose.position
    assert goals[0].header.frame_id == "odom"
    assert g.x < 1.65 - 0.3, (g.x, g.y)  # the box's side of the wall
    assert np.min(np.linalg.norm(occupied - [g.x, g.y], axis=1)) >= 0.3
    assert math.hypot(g.x - 1.2, g.y) == pytest.approx(math.hypot(0.2, 0.2) + 0.5, abs=1e-4)


def test_odometry_in_another_frame_is_reported(spawn, client):
    goals = client.collect(PoseStamped, "/goal_pose")
    status = client.collect(String, "/nav_bridge/status", latched_qos(10))
    target = client.node.create_publisher(GroundedObject, "/nav_bridge/target", 10)
    odom_pub = client.node.create_publisher(Odometry, "/odom", 10)
    bridge = spawn("nav_bridge", {"standoff_distance": 0.5, "occupancy_topic": ""})
    wait_for(lambda: odom_pub.get_subscription_count() > 0, 30, "odometry subscription", bridge)
    wait_for(lambda: target.get_subscription_count() > 0, 30, "target subscription", bridge)
    for _ in range(5):  # odometry streams; the target comes after it has arrived
        odom_pub.publish(odom("other_odom", 0.0, 5.0))
        time.sleep(0.1)
    target.publish(crate("map"))
    wait_for(lambda: goals and status, 30, "a goal", bridge)
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        want = "odometry is in 'other_odom' but the object in 'map'"
        wait_for(lambda: want in bridge.output(), 30, "the warning", bridge)
        g = goals[0].pose.position  # the default approach (-x), not the robot's +y side
        assert g.x < 1.2 and g.y == pytest.approx(0.0, abs=1e-6)
    else:
        wait_for(lambda: "no transform 'map' <- 'other_odom'" in bridge.output(), 30, "tf")


def test_a_goal_waits_for_the_nav_stack_to_subscribe(spawn, client):
    """The goal topic is volatile: a goal published before the nav stack's subscription has
    matched is never received. The bridge waits (goal_wait_s) for a subscriber; with none it
    says the goal went unheard."""
    status = client.collect(String, "/nav_bridge/status", latched_qos(10))
    target = client.node.create_publisher(GroundedObject, "/nav_bridge/target", 10)
    bridge = spawn("nav_bridge", {"occupancy_topic": "", "goal_wait_s": 30.0})
    wait_for(lambda: target.get_subscription_count() > 0, 30, "target subscription", bridge)
    target.publish(crate("odom"))
    time.sleep(1.0)  # the target has arrived; no one subscribes to /goal_pose yet
    assert not status
    goals = client.collect(PoseStamped, "/goal_pose")  # the nav stack starts late
    wait_for(lambda: goals, 30, "the goal", bridge)
    assert goals[0].header.frame_id == "odom"
    bridge.stop()
    bridge.proc.wait(timeout=30)
    wait_for(lambda: target.get_subscription_count() == 0, 30, "the first bridge to leave")
    deaf = spawn(
        "nav_bridge", {"occupancy_topic": "", "goal_topic": "/nobody", "goal_wait_s": 0.5}
    )
    wait_for(lambda: target.get_subscription_count() > 0, 30, "target subscription", deaf)
    target.publish(crate("odom"))
    want = "via /nobody (nothing subscribes to it: the goal is not received)"
    wait_for(lambda: any(want in m.data for m in status), 30, "the warning", deaf)
