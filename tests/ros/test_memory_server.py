"""The memory server in its own process, called over loopback DDS: correct answers, clear
errors for bad requests, and it keeps serving afterwards. The nav bridge turns an answer
into a stand-off goal."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.ros.conftest import wait_for

pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from m3_core.data.synthetic import look_at_c2w  # noqa: E402
from m3_core.navigation import standoff_goal  # noqa: E402
from m3_core.types import Camera  # noqa: E402
from m3_ros import convert  # noqa: E402
from m3_ros.node_utils import latched_qos  # noqa: E402
from m3_ros.srv import GroundObject, LoadMemory, QueryText, RenderFeatureAt  # noqa: E402

GROUND = "/memory_server/ground_object"


def true_boxes(scene) -> dict:
    doc = json.loads((scene / "objects.json").read_text())
    return {o["label"]: (np.array(o["center"]), np.array(o["size"])) for o in doc["objects"]}


def render_request(width: int, height: int) -> RenderFeatureAt.Request:
    cam = Camera(60.0, 60.0, width / 2, height / 2, width, height, look_at_c2w([0, -1, 0.5], 1.2))
    req = RenderFeatureAt.Request(features=["labels"], include_rgb=True, include_depth=True)
    req.camera_pose = convert.pose_stamped(cam.c2w.double(), "map")
    req.camera_info = convert.camera_info_msg(cam)
    return req


def test_memory_server_answers_and_survives_bad_requests(trained_memory, spawn, client):
    memory, scene = trained_memory
    server = spawn("memory_server", {"memory_path": str(memory), "max_render_pixels": 200 * 200})
    res = client.call(GroundObject, GROUND, GroundObject.Request(text="chair", max_results=3))
    assert res.success, res.message
    assert res.objects, "the chair was not found"
    assert res.message.endswith(f"in memory {memory.resolve()}")  # which memory answered
    best = res.objects[0]
    centre, size = true_boxes(scene)["chair"]
    p = best.center.pose.position
    assert np.linalg.norm([p.x - centre[0], p.y - centre[1], p.z - centre[2]]) < 0.3
    assert best.center.header.frame_id == "map" and best.label == "chair"
    assert 0.0 < best.score <= 1.0 and best.num_gaussians > 0

    # bad requests: clear messages, no crash
    bad = client.call(GroundObject, GROUND, GroundObject.Request(text="   "))
    assert not bad.success and "empty" in bad.message.lower()
    bad = client.call(GroundObject, GROUND, GroundObject.Request(text="chair", feature="nope"))
    assert not bad.success and "nope" in bad.message
    big = client.call(
        RenderFeatureAt, "/memory_server/render_feature_at", render_request(400, 300)
    )
    assert not big.success and "max_render_pixels" in big.message
    req = render_request(64, 48)
    req.camera_pose.pose.orientation.w = float("nan")
    bad = client.call(RenderFeatureAt, "/memory_server/render_feature_at", req)
    assert not bad.success and "NaN" in bad.message
    bad = client.call(LoadMemory, "/memory_server/load_memory", LoadMemory.Request(path="/nope"))
    assert not bad.success and "/nope" in bad.message

    # still serving, with the old memory
    ok = client.call(RenderFeatureAt, "/memory_server/render_feature_at", render_request(64, 48))
    assert ok.success, ok.message
    assert (ok.rgb.width, ok.rgb.height, ok.rgb.encoding) == (64, 48, "rgb8")
    assert (ok.depth.width, ok.depth.encoding) == (64, "32FC1")
    fmap = convert.feature_map_from_msg(ok.feature_maps[0])
    assert ok.feature_names == ["labels"] and fmap.shape[:2] == (48, 64)
    q = QueryText.Request(text="sofa", top_k=5)
    top = client.call(QueryText, "/memory_server/query_text", q)
    assert top.success and len(top.points) == 5 and top.frame_id == "map"
    assert list(top.scores) == sorted(top.scores, reverse=True)
    centre, size = true_boxes(scene)["sofa"]
    pts = np.array([[pt.x, pt.y, pt.z] for pt in top.points])
    inside = np.all(np.abs(pts - centre) <= size / 2 + 0.2, axis=1)
    assert inside.mean() >= 0.6, pts
    assert server.alive(), server.output()[-2000:]


def test_nav_bridge_publishes_a_standoff_goal(trained_memory, spawn, client):
    from nav_msgs.msg import OccupancyGrid

    from m3_ros.node_utils import latched_qos

    memory, scene = trained_memory
    spawn("memory_server", {"memory_path": str(memory)})
    bridge = spawn("nav_bridge", {"standoff_distance": 0.7})
    grids = client.collect(OccupancyGrid, "/memory_server/occupancy", latched_qos(1))
    goals = client.collect(PoseStamped, "/goal_pose")
    status = client.collect(String, "/nav_bridge/status", latched_qos(10))
    cmd = client.node.create_publisher(String, "/nav_bridge/command", 10)
    wait_for(lambda: cmd.get_subscription_count() > 0, 30, "nav_bridge subscription", bridge)
    cmd.publish(String(data="Go to the table."))  # the verb is stripped before grounding
    wait_for(lambda: goals, 60, "a goal on /goal_pose", bridge)
    goal = goals[0]
    assert goal.header.frame_id == "map"
    res = client.call(GroundObject, GROUND, GroundObject.Request(text="table", max_results=1))
    obj = res.objects[0]
    c, s = obj.center.pose.position, obj.size
    lo, hi = [c.x - s.x / 2, c.y - s.y / 2, c.z - s.z / 2], [c.x + s.x / 2, c.y + s.y / 2, 0]
    wait_for(lambda: grids, 30, "the occupancy grid")
    assert grids[0].header.frame_id == "map" and 0 < sum(v == 100 for v in grids[0].data)
    occupied, free = convert.grid_cells_from_msg(grids[0])  # the bridge's goal: off occupied
    expect = standoff_goal(  # ground, near seen floor, not behind a wall
        lo,
        [hi[0], hi[1], c.z + s.z / 2],
        distance=0.7,
        obstacles_xy=occupied,
        free_xy=free,
        robot_radius=0.3,
        sight_clearance=grids[0].info.resolution,
    )
    assert np.min(np.linalg.norm(occupied - [expect.x, expect.y], axis=1)) >= 0.3
    assert goal.pose.position.x == pytest.approx(expect.x, abs=1e-4)
    assert goal.pose.position.y == pytest.approx(expect.y, abs=1e-4)
    yaw = 2 * math.atan2(goal.pose.orientation.z, goal.pose.orientation.w)
    assert math.cos(yaw - expect.yaw) == pytest.approx(1.0, abs=1e-6)
    assert any("goal for 'table'" in m.data for m in status)
    cmd.publish(String(data="spaceship"))
    wait_for(
        lambda: (
            any("no goal" in m.data or "no 'spaceship'" in m.data for m in status)
            or any("failed" in m.data for m in status)
        ),
        30,
        "a refusal for spaceship",
        bridge,
    )
    assert len(goals) == 1


def test_nav_bridge_gives_up_on_a_server_that_never_answers(spawn, client):
    import threading

    release = threading.Event()

    def stuck(req, res):
        release.wait(20)
        return res

    from rclpy.callback_groups import ReentrantCallbackGroup

    # its own group: the stuck reply must not hold up the status subscription's callbacks
    group = ReentrantCallbackGroup()
    client.node.create_service(GroundObject, "/stuck/ground_object", stuck, callback_group=group)
    bridge = spawn("nav_bridge", {"ground_service": "/stuck/ground_object", "ground_timeout": 1.0})
    status = client.collect(String, "/nav_bridge/status", latched_qos(10))
    cmd = client.node.create_publisher(String, "/nav_bridge/command", 10)
    wait_for(lambda: cmd.get_subscription_count() > 0, 30, "nav_bridge subscription", bridge)
    cmd.publish(String(data="go to the chair"))
    wait_for(lambda: any("no answer in 1.0 s" in m.data for m in status), 30, "a timeout", bridge)
    release.set()
    cmd.publish(String(data="   "))
    wait_for(lambda: any("empty command" in m.data for m in status), 30, "still alive", bridge)
    assert bridge.alive()


def test_nav_bridge_asks_again_when_a_reply_is_lost(spawn, client):
    """The first GroundObject reply never comes (as when DDS drops it under load); the bridge
    asks again after ground_retry_s and sends the goal from the second answer."""
    import threading

    from rclpy.callback_groups import ReentrantCallbackGroup

    from m3_ros.msg import GroundedObject

    release, calls = threading.Event(), []

    def lossy(req, res):
        calls.append(req.text)
        if len(calls) == 1:
            release.wait(20)  # this reply is "lost": it comes after the bridge gave up on it
            return res
        obj = GroundedObject(label=req.text, score=0.9)
        obj.center.header.frame_id = "map"
        obj.center.pose.position.x, obj.center.pose.orientation.w = 2.0, 1.0
        obj.size.x = obj.size.y = obj.size.z = 0.5
        res.success, res.objects = True, [obj]
        return res

    client.node.create_service(
        GroundObject, "/lossy/ground_object", lossy, callback_group=ReentrantCallbackGroup()
    )
    goals = client.collect(PoseStamped, "/goal_pose")
    bridge = spawn("nav_bridge", {"ground_service": "/lossy/ground_object",
                                  "ground_retry_s": 0.5, "ground_timeout": 10.0})  # fmt: skip
    cmd = client.node.create_publisher(String, "/nav_bridge/command", 10)
    wait_for(lambda: cmd.get_subscription_count() > 0, 30, "nav_bridge subscription", bridge)
    cmd.publish(String(data="go to the chair"))
    wait_for(lambda: goals, 30, "a goal from the second answer", bridge)
    release.set()
    assert calls[:2] == ["chair", "chair"] and goals[0].header.frame_id == "map"
    assert math.hypot(goals[0].pose.position.x - 2.0, goals[0].pose.position.y) > 0.5


def test_nav_bridge_goals_are_in_the_objects_frame_and_never_relabelled(spawn, client):
    """A target in 'odom' gives a goal in 'odom' (goal_frame empty: the memory's frame); a
    bridge told to use another frame refuses instead of sending a goal in the wrong frame."""
    from m3_ros.msg import GroundedObject

    target = GroundedObject(label="crate", score=0.9)
    target.center.header.frame_id = "odom"
    target.center.pose.position.x, target.center.pose.orientation.w = 2.0, 1.0
    target.size.x = target.size.y = target.size.z = 0.5
    goals = client.collect(PoseStamped, "/goal_pose")
    status = client.collect(String, "/nav_bridge/status", latched_qos(10))
    pub = client.node.create_publisher(GroundedObject, "/nav_bridge/target", 10)
    bridge = spawn("nav_bridge", {"standoff_distance": 0.5})
    wait_for(lambda: pub.get_subscription_count() > 0, 30, "nav_bridge subscription", bridge)
    pub.publish(target)
    wait_for(lambda: goals, 30, "a goal", bridge)
    assert goals[0].header.frame_id == "odom"
    g = goals[0].pose.position
    radius = math.hypot(0.25, 0.25) + 0.5  # the box's ground circumradius + the stand-off
    assert math.hypot(g.x - 2.0, g.y) == pytest.approx(radius, abs=1e-4)
    bridge.stop()
    bridge.proc.wait(timeout=30)
    wait_for(lambda: pub.get_subscription_count() == 0, 30, "the first bridge to leave")
    other = spawn("nav_bridge", {"goal_frame": "map"})
    wait_for(lambda: pub.get_subscription_count() > 0, 30, "the second bridge", other)
    pub.publish(target)
    want = "it is in 'odom', goal_frame is 'map'"
    wait_for(lambda: any(want in m.data for m in status), 30, "the refusal", other)
    assert len(goals) == 1


def test_memory_arrives_from_another_host_and_bad_archives_change_nothing(
    trained_memory, spawn, client, tmp_path
):
    """No shared filesystem: the server unpacks the announced archive into its own folder,
    also when it starts after the announcement (transient local); a corrupt archive is
    logged and the server keeps answering from the memory it has."""
    from m3_core.memory.archive import memory_digest
    from m3_ros.memory_delivery import archive_msg, memory_publisher

    memory, _ = trained_memory
    pub = memory_publisher(client.node, "/trainer/memory")
    msg = archive_msg(memory, client.node.get_clock().now().to_msg())
    msg.source_path = "/elsewhere/on/the/trainer"  # as seen from another host
    pub.publish(msg)  # before the server exists
    inbox = tmp_path / "server_memories"
    server = spawn("memory_server", {"memories_dir": str(inbox), "shared_filesystem": False})

    def answers():
        r = client.call(GroundObject, GROUND, GroundObject.Request(text="chair"))
        return r.success and r.objects

    wait_for(answers, 120, "the server to load the announced memory", server)
    assert memory_digest(inbox / memory.name) == memory_digest(memory)

    bad = archive_msg(memory, client.node.get_clock().now().to_msg())
    bad.name, bad.sha256 = "broken", "0" * 64
    data = bytearray(bad.archive.tobytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"x" * 64
    bad.archive = bytes(data)
    pub.publish(bad)
    wait_for(lambda: "ignored memory 'broken'" in server.output(), 60, "the refusal", server)
    assert answers() and server.alive()
    assert not (inbox / "broken").exists()
