"""The fault matrix: each node process killed with SIGKILL (no clean-up of any kind) while the
others keep working, then started again where that is part of the story. One stack of the four
nodes, killed one at a time:

- trainer: the memory server answers, the nav bridge sends goals, the collector records; the
  restarted trainer catches up on the keyframes streamed while it was gone (transient local).
- collector: the memory server answers, the trainer's action server answers; the restarted
  collector continues the same recording (no lost frames, no duplicated names).
- memory_server: the collector records and streams; the nav bridge reports the outage and
  stays up, and sends goals again once a server is back.
- nav_bridge: the memory server answers, the collector records.

Cases covered elsewhere are not repeated: a trainer killed mid-goal with the goal re-sent
(test_train_request.py), lifecycle transitions (test_memory_lifecycle.py), paths and ids
over DDS (test_trust.py), crashes during a checkpoint write (tests/core/train)."""

from __future__ import annotations

import pytest

from tests.ros.conftest import trainer_params, wait_for

pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from m3_core.data import load_dataset  # noqa: E402
from m3_ros.action import TrainMemory  # noqa: E402
from m3_ros.node_utils import latched_qos  # noqa: E402
from m3_ros.srv import GroundObject  # noqa: E402
from tests.ros.test_full_loop import COLLECT, frame_count, publish_walk  # noqa: E402
from tests.ros.test_trust import result_of, send_goal  # noqa: E402

GROUND = "/memory_server/ground_object"
IMAGES = "/camera/image_raw"


def kill(node) -> None:
    """kill -9: the process gets no chance to flush, close or say goodbye."""
    node.proc.kill()
    node.proc.wait(timeout=30)
    assert node.proc.returncode == -9


def subscribers(client, topic: str) -> set[bytes]:
    """The endpoint ids of the subscriptions to ``topic`` that this client's graph knows."""
    return {bytes(i.endpoint_gid) for i in client.node.get_subscriptions_info_by_topic(topic)}


def recording(root):
    """The one recording folder under ``root`` (the collector names it rec_<time>)."""
    found = sorted(root.glob("rec_*")) if root.exists() else []
    assert len(found) <= 1, found
    return found[0] if found else root / "none_yet"


def test_each_node_killed_while_the_others_keep_working(trained_memory, spawn, client, tmp_path):
    memory, scene = trained_memory
    walk = load_dataset(scene)
    server_params = {"memory_path": str(memory)}
    trainer_args = trainer_params(tmp_path)
    # recording_id empty: a restarted collector picks up its recent rec_* (as after a respawn)
    collector_params = {**COLLECT, "recording_id": "", "output_dir": str(tmp_path / "rec")}
    server = spawn("memory_server", server_params)
    trainer = spawn("trainer", trainer_args)
    collector = spawn("collector", collector_params)
    bridge = spawn("nav_bridge", {"standoff_distance": 0.7, "ground_timeout": 3.0})
    goals = client.collect(PoseStamped, "/goal_pose")
    status = client.collect(String, "/nav_bridge/status", latched_qos(10))
    cmd = client.node.create_publisher(String, "/nav_bridge/command", 10)

    def grounds() -> bool:
        try:
            res = client.call(GroundObject, GROUND, GroundObject.Request(text="chair"), 20)
        except AssertionError:  # no reply: a request sent to a killed server is lost
            return False
        return res.success and bool(res.objects) and res.objects[0].label == "chair"

    def collected() -> int:
        return frame_count(recording(tmp_path / "rec"))

    def streamed() -> int:
        return frame_count(recording(tmp_path / "trainer_rec"))

    def go(n_goals: int) -> None:
        cmd.publish(String(data="go to the table"))
        wait_for(lambda: len(goals) == n_goals, 60, f"goal {n_goals}", bridge)
        assert goals[-1].header.frame_id == "map"

    wait_for(grounds, 90, "the memory server", server)
    wait_for(lambda: cmd.get_subscription_count() > 0, 60, "the nav bridge", bridge)
    wait_for(lambda: "trainer" in client.node.get_node_names(), 60, "the trainer", trainer)

    # --- the trainer dies (idle): everything else carries on -------------------------------
    kill(trainer)
    publish_walk(client, walk, frames=range(0, 6))
    wait_for(lambda: collected() == 6, 60, "6 keyframes without a trainer", collector)
    assert grounds()
    go(1)
    trainer = spawn("trainer", trainer_args)
    wait_for(lambda: streamed() == 6, 90, "the restarted trainer to catch up", trainer)

    # --- the collector dies: the others answer; its successor continues the recording ------
    rec = recording(tmp_path / "rec")
    dead = subscribers(client, IMAGES)  # the killed one stays in the graph until its lease ends
    kill(collector)
    assert grounds()
    go(2)
    accepted, handle = send_goal(client, TrainMemory.Goal(recording_id="../x"), 90, attempts=3)
    res = result_of(handle)  # the (restarted) trainer's action server answers and refuses
    assert accepted and not res.success and "bad recording_id" in res.message, res.message
    collector = spawn("collector", collector_params)
    wait_for(lambda: subscribers(client, IMAGES) - dead, 60, "the new collector", collector)
    publish_walk(client, walk, frames=range(6, 10))
    wait_for(lambda: collected() == 10, 60, "4 more keyframes in the same recording", collector)
    assert recording(tmp_path / "rec") == rec
    wait_for(lambda: streamed() == 10, 60, "the trainer to receive them", trainer)
    names = [f.name for f in load_dataset(rec).frames]
    assert len(set(names)) == 10  # no keyframe overwrote another

    # --- the memory server dies: recording goes on, the bridge says why it has no goal -----
    kill(server)
    publish_walk(client, walk, frames=range(10, 14))
    wait_for(lambda: collected() == 14, 60, "keyframes without a memory server", collector)
    wait_for(lambda: streamed() == 14, 60, "the stream without a memory server", trainer)
    cmd.publish(String(data="go to the table"))
    outage = ("is not available", "no answer in 3.0 s")
    wait_for(lambda: any(w in m.data for m in status for w in outage), 60, "the outage", bridge)
    assert len(goals) == 2 and bridge.alive()
    server = spawn("memory_server", server_params)
    wait_for(grounds, 90, "the restarted memory server", server)
    go(3)

    # --- the nav bridge dies: grounding and recording do not depend on it ------------------
    kill(bridge)
    assert grounds()
    publish_walk(client, walk, frames=range(14, 16))
    wait_for(lambda: collected() == 16, 60, "keyframes without a nav bridge", collector)
    wait_for(lambda: streamed() == 16, 60, "the stream without a nav bridge", trainer)
    for node in (server, trainer, collector):
        assert node.alive(), node.output()[-2000:]
