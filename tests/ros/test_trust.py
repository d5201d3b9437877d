"""Trust boundaries: names and paths that arrive over DDS (TrainMemory goals, LoadMemory,
MemoryArchive, the collector's recording_id) stay inside the configured folders; nothing is
written outside them, refused archives leave nothing behind, and a second goal is rejected
while one runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from tests.ros.conftest import wait_for

pytest.importorskip("rclpy")
from m3_core.errors import InvalidInputError  # noqa: E402
from m3_ros.srv import GroundObject, LoadMemory  # noqa: E402
from m3_ros.trust import check_id, confine  # noqa: E402


def test_check_id_takes_plain_names_only():
    assert check_id("rec_2026-01-02.a") == "rec_2026-01-02.a"
    for bad in ("", ".", "..", "../x", "a/b", "/abs", ".hidden", "a\x00b", "x" * 129, "é"):
        with pytest.raises(InvalidInputError, match="bad id"):
            check_id(bad)


def test_confine_resolves_relative_paths_dotdot_and_symlinks(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert confine("a", [root]) == root / "a"
    assert confine(root / "a" / ".." / "a", [root]) == root / "a"
    assert confine(root, [root]) == root
    with pytest.raises(InvalidInputError, match="outside"):
        confine(root, [root], inside=True)
    for bad in (root / ".." / "outside", root / "link" / "x", "../outside", outside):
        with pytest.raises(InvalidInputError, match="outside the allowed folders"):
            confine(bad, [root])
    with pytest.raises(InvalidInputError, match="no allowed folder"):
        confine(root / "a", ["", " "])


def send_goal(client, goal, timeout: float = 60.0, attempts: int = 1):
    """(accepted, goal handle) of a TrainMemory goal sent to the trainer process. With
    ``attempts`` > 1 an unanswered request is sent again (``timeout`` split between them): a
    request sent while a restarted server's endpoints are still being discovered (the dead
    one's linger in the graph, so the server looks ready) is never answered."""
    from rclpy.action import ActionClient

    from m3_ros.action import TrainMemory

    if not hasattr(client, "train_client"):
        client.train_client = ActionClient(client.node, TrainMemory, "/trainer/train_memory")
        client.feedback = []
    assert client.train_client.wait_for_server(timeout_sec=timeout), "no trainer"
    for attempt in range(attempts):
        future = client.train_client.send_goal_async(
            goal, feedback_callback=client.feedback.append
        )
        try:
            wait_for(future.done, timeout / attempts, "the goal response")
            break
        except AssertionError:
            if attempt == attempts - 1:
                raise
    handle = future.result()
    return handle.accepted, handle


def result_of(handle, timeout: float = 120.0):
    future = handle.get_result_async()
    wait_for(future.done, timeout, "the goal result")
    return future.result().result


def test_trainer_goals_outside_the_roots_are_refused_and_a_second_goal_is_rejected(
    trained_memory, spawn, client, tmp_path
):
    from m3_ros.action import TrainMemory

    _, scene = trained_memory
    data = tmp_path / "site"
    shutil.copytree(scene, data / "scene")
    outside = tmp_path / "outside"
    trainer = spawn(
        "trainer",
        {
            "recordings_dir": str(tmp_path / "rec"),
            "memories_dir": str(tmp_path / "mem"),
            "dataset_roots": [str(data)],
            "features": ["labels"],
            "device": "cpu",
            "max_image_size": [80, 60],
        },
    )
    for goal, why in (
        (TrainMemory.Goal(recording_id="../outside"), "bad recording_id"),
        (TrainMemory.Goal(dataset_path=str(scene)), "outside the allowed folders"),
        (
            TrainMemory.Goal(dataset_path=str(data / "scene"), output_path=str(outside / "m")),
            "output_path",
        ),
    ):
        accepted, handle = send_goal(client, goal)
        assert accepted
        res = result_of(handle)
        assert not res.success and why in res.message, res.message
    assert not outside.exists()

    long = TrainMemory.Goal(dataset_path=str(data / "scene"), iterations=100_000)
    accepted, first = send_goal(client, long)
    assert accepted
    wait_for(lambda: client.feedback, 120, "training feedback", trainer)
    accepted, _ = send_goal(client, TrainMemory.Goal(dataset_path=str(data / "scene")))
    assert not accepted  # rejected in the goal callback, not queued behind the first
    wait_for(first.cancel_goal_async().done, 30, "the cancel", trainer)
    res = result_of(first, 300)
    assert not res.success and "resumable" in res.message
    accepted, again = send_goal(client, TrainMemory.Goal(recording_id="../x"))
    assert accepted and not result_of(again).success  # the lock was released
    assert trainer.alive()


def test_load_memory_and_archives_stay_inside_the_servers_folders(
    trained_memory, spawn, client, tmp_path
):
    from m3_ros.memory_delivery import archive_msg, memory_publisher

    memory, _ = trained_memory
    allowed, inbox = tmp_path / "allowed", tmp_path / "inbox"
    allowed.mkdir()
    (allowed / "escape").symlink_to(memory)
    server = spawn(
        "memory_server",
        {
            "load_roots": [str(allowed)],
            "memories_dir": str(inbox),
            "accept_memories_from": ["trainer"],
        },
    )
    load = "/memory_server/load_memory"
    for path in (str(memory), str(allowed / "escape"), str(allowed / ".." / "other")):
        res = client.call(LoadMemory, load, LoadMemory.Request(path=path), timeout=90)
        assert not res.success and "outside the allowed folders" in res.message, res.message
    shutil.copytree(memory, allowed / "mem")
    res = client.call(LoadMemory, load, LoadMemory.Request(path=str(allowed / "mem")))
    assert res.success, res.message

    # an archive from a node that is not the trainer is ignored, and leaves nothing behind
    pub = memory_publisher(client.node, "/trainer/memory")
    wait_for(lambda: pub.get_subscription_count() > 0, 30, "the inbox", server)
    msg = archive_msg(memory, client.node.get_clock().now().to_msg())
    pub.publish(msg)
    refusal = "sender '/test_client' is not accepted"  # the publishing node, by name
    wait_for(lambda: refusal in server.output(), 60, "the refusal", server)
    assert not inbox.exists() or not any(inbox.iterdir())
    # the same archive from a node named trainer is taken (a name is not a credential:
    # SROS2 is what authenticates nodes, see the README)
    from rclpy.node import Node

    trainer = Node("trainer", context=client.node.context)
    client.executor.add_node(trainer)
    memory_publisher(trainer, "/trainer/memory").publish(msg)
    wait_for(lambda: (inbox / memory.name).is_dir(), 60, "the trainer's archive", server)
    wait_for(lambda: "received from /trainer" in server.output(), 60, "the load", server)
    assert server.alive()


def test_archives_with_bad_names_or_contents_leave_nothing(
    trained_memory, spawn, client, tmp_path
):
    from m3_ros.memory_delivery import archive_msg, memory_publisher

    memory, _ = trained_memory
    inbox = tmp_path / "inbox"
    server = spawn("memory_server", {"memories_dir": str(inbox), "shared_filesystem": True})
    pub = memory_publisher(client.node, "/trainer/memory")
    wait_for(lambda: pub.get_subscription_count() > 0, 60, "the inbox", server)
    msg = archive_msg(memory, client.node.get_clock().now().to_msg())
    msg.name = "../escaped"
    pub.publish(msg)
    wait_for(lambda: "bad memory name" in server.output(), 60, "the name refusal", server)
    msg.name, msg.sha256 = "wrong", "0" * 64  # verified, but not the announced memory
    time.sleep(0.5)
    pub.publish(msg)
    wait_for(lambda: "announced memory" in server.output(), 60, "the digest refusal", server)
    assert not inbox.exists() or not any(inbox.iterdir()), list(inbox.iterdir())
    assert not (tmp_path / "escaped").exists()
    # source_path outside the server's folders is not loaded in place, but from the archive
    msg = archive_msg(memory, client.node.get_clock().now().to_msg())
    pub.publish(msg)
    ok = GroundObject.Request(text="chair")
    wait_for(
        lambda: client.call(GroundObject, "/memory_server/ground_object", ok).success,
        120,
        "the good archive",
        server,
    )
    assert sorted(p.name for p in inbox.iterdir()) == [memory.name]


def test_collector_refuses_a_recording_id_that_escapes(tmp_path):
    import yaml

    params = tmp_path / "p.yaml"
    out = tmp_path / "out" / "rec"
    doc = {"output_dir": str(out), "recording_id": "../../x"}
    params.write_text(yaml.safe_dump({"collector": {"ros__parameters": doc}}))
    run = subprocess.run(
        [sys.executable, "-m", "m3_ros.collector", "--ros-args", "--params-file", str(params)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "bad recording_id '../../x'" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x").exists() and not out.exists()
