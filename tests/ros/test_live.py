"""The live memory (issue 18.2) through the nodes: keyframes streamed to a trainer with
``live`` on become a memory that the memory server answers from, before any TrainMemory goal.

The keyframes are published as the collector streams them (``m3_ros/Keyframe``, PNG image,
32FC1 depth, pose in "odom"); the room's per-pixel label features are the recording's
precomputed features (bring-your-own), placed in the trainer's recording folder beforehand."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.ros.conftest import trainer_params, wait_for

pytest.importorskip("rclpy")
from m3_core.data import make_synthetic_scene  # noqa: E402
from m3_core.live.choose import COS_MARGIN  # noqa: E402
from m3_ros import convert  # noqa: E402
from m3_ros.msg import Keyframe  # noqa: E402
from m3_ros.node_utils import latched_qos  # noqa: E402
from m3_ros.srv import GroundObject  # noqa: E402

HIT_RADIUS = 0.3  # metres from the answer's centre to the object's true box
PUBLISH_EVERY = 8


def keyframe_msg(walk, k: int) -> Keyframe:
    """Frame ``k`` of the walk as the collector streams it (``KeyframeSink.message``)."""
    frame = walk.frames[k]
    rgb = (walk.load_image(k).numpy() * 255).round().astype(np.uint8)
    msg = Keyframe(recording_id="walk", name=frame.name)
    msg.header.frame_id = "odom"
    msg.camera_info = convert.camera_info_msg(frame.camera, "camera")
    msg.image = convert.rgb_to_compressed(rgb, "png")
    msg.depth = convert.array_to_image(walk.load_depth(k).numpy().astype(np.float32), "32FC1")
    msg.camera_pose = convert.matrix_to_pose_msg(frame.camera.c2w.double())
    return msg


def box_distance(p, center, size) -> float:
    """Distance from point ``p`` to the axis-aligned box (0 inside)."""
    d = np.maximum(np.abs(np.asarray(p) - np.asarray(center)) - np.asarray(size) / 2, 0.0)
    return float(np.linalg.norm(d))


def test_live_memory_answers_before_any_training(spawn, client, tmp_path):
    walk = make_synthetic_scene(
        tmp_path / "scene", num_frames=24, width=80, height=60, feature_stride=4
    )
    truth = json.loads((walk.root / "objects.json").read_text())["objects"]
    received = tmp_path / "trainer_rec" / "walk"
    shutil.copytree(walk.root / "features", received / "features")  # precomputed labels
    server_dir = tmp_path / "server_memories"
    server = spawn("memory_server", {"memories_dir": str(server_dir), "shared_filesystem": False})
    trainer = spawn(
        "trainer",
        trainer_params(
            tmp_path,
            features=["effnet"],  # live_features overrides it: never extracted here
            live=True,
            live_features=["labels"],
            live_publish_every=PUBLISH_EVERY,
        ),
    )
    pub = client.node.create_publisher(Keyframe, "/collector/keyframes", latched_qos(100))
    wait_for(lambda: pub.get_subscription_count() > 0, 30, "the trainer's subscription", trainer)
    for k in range(len(walk.frames)):
        pub.publish(keyframe_msg(walk, k))

    answers: dict[str, float] = {}

    def all_grounded() -> bool:
        for o in truth:
            req = GroundObject.Request(text=o["label"])
            res = client.call(GroundObject, "/memory_server/ground_object", req)
            if not (res.success and res.objects):
                return False
            c = res.objects[0].center
            assert c.header.frame_id == "odom"  # the frame the keyframes were recorded in
            answers[o["label"]] = box_distance(
                [c.pose.position.x, c.pose.position.y, c.pose.position.z], o["center"], o["size"]
            )
        return max(answers.values()) <= HIT_RADIUS

    wait_for(all_grounded, 45, f"every object answered within {HIT_RADIUS} m", server)
    # answered by the live memory, announced as walk.live, with no TrainMemory goal sent
    assert "TrainMemory goal" not in trainer.output()
    live = server_dir / "walk.live"
    meta = json.loads((live / "memory.json").read_text())
    assert 0 < meta["extra"]["live"]["keyframes"] <= len(walk.frames)
    assert meta["extra"]["world_frame"] == "odom"
    assert (tmp_path / "mem" / "walk" / "live" / "memory.json").is_file()
    assert not (tmp_path / "mem" / "walk" / "memory.json").exists()  # nothing trained
    assert f"snapshot of {PUBLISH_EVERY} keyframes" in trainer.output()
    assert not (received / "features" / "effnet").exists()
    assert server.alive() and trainer.alive()


def test_a_keyframe_without_features_is_skipped_and_the_rest_published(tmp_path):
    """No ROS: the worker itself. Frame 0 is the recording's test view (held out, not folded);
    frame 2 has no label map (and "labels" is no extractor): logged and skipped; snapshots
    every 3 folded keyframes (1, 3, 4), the rest (5) when the stream pauses."""
    from types import SimpleNamespace

    from m3_ros.live_worker import LiveWorker

    walk = make_synthetic_scene(tmp_path / "rec" / "walk", num_frames=6, width=40, height=30)
    (walk.root / "features" / "labels" / f"{walk.frames[2].name}.npy").unlink()
    warnings, announced = [], []
    log = SimpleNamespace(info=lambda m: None, warning=warnings.append, error=warnings.append)
    worker = LiveWorker(
        tmp_path / "rec", tmp_path / "mem", ["labels"],
        lambda path, name: announced.append((name, json.loads(
            (tmp_path / "mem" / "walk" / "live" / "memory.json").read_text()
        )["extra"]["live"]["keyframes"])),
        log, publish_every=3, idle_publish_s=0.5,
    )  # fmt: skip
    worker.submit("walk")
    wait_for(lambda: len(announced) == 2, 60, "two snapshots")
    worker.close()
    assert announced == [("walk.live", 3), ("walk.live", 4)]
    assert len(warnings) == 1 and walk.frames[2].name in warnings[0], warnings


def test_keyframes_fold_in_recording_order_and_snapshots_are_calibrated(tmp_path):
    """A backlog is folded in recording order (the live memory must not depend on arrival
    timing); frame 0 is the test view and is never folded; the snapshot's relevancy
    temperature is fitted on its keyframes' real label maps."""
    from types import SimpleNamespace

    from m3_ros.live_worker import LiveWorker

    walk = make_synthetic_scene(tmp_path / "rec" / "walk", num_frames=6, width=40, height=30)
    infos, announced = [], []
    log = SimpleNamespace(info=infos.append, warning=infos.append, error=infos.append)
    worker = LiveWorker(tmp_path / "rec", tmp_path / "mem", ["labels"],
                        lambda path, name: announced.append(name), log, publish_every=10,
                        idle_publish_s=0.5)  # fmt: skip
    worker.submit("walk")
    wait_for(lambda: announced, 60, "the snapshot")
    worker.close()
    folded = [re.search(r"keyframe (\S+) folded", m) for m in infos]
    assert [m.group(1) for m in folded if m] == [walk.frames[i].name for i in (1, 2, 3, 4, 5)]
    from m3_core.data import FeatureStore
    from m3_core.memory import Memory
    from m3_core.memory.grounding import fit_temperatures, load_grounding_index

    live = tmp_path / "mem" / "walk" / "live"
    memory = Memory.load(live)
    index = load_grounding_index(live, memory)
    assert index is not None and set(index.temperatures) == {"labels"}
    store = FeatureStore(walk.root, "labels")
    ids = [1, 2, 3, 4, 5]
    grids = [store.load(walk.frames[i].name) for i in ids]
    cams = [walk.frames[i].camera for i in ids]
    want = fit_temperatures(memory, cams, {"labels": (store.vocabulary()[1], grids)})
    assert index.temperatures["labels"] == pytest.approx(want["labels"], rel=1e-4)


# -- a trained memory is not displaced by a live snapshot that measures worse -----------------
WALK_FRAMES = 17  # test views 0, 8, 16 (held out); the worker folds 14: two snapshots of 7


def _memory_of(walk, ids, out, *, zero_queries: bool = False):
    """A stand-in for a trained memory of ``walk``: keyframes ``ids`` folded (queries zeroed:
    every Gaussian decodes to the bank mean), saved as trained on the training views."""
    from m3_core.config import MemoryConfig
    from m3_core.live import LiveMemory, keyframe_from_dataset
    from m3_core.types import ModelSpec

    live = LiveMemory(MemoryConfig(models=[ModelSpec("labels", 16, 8, 0.95)], sh_degree=0))
    for i in ids:
        live.add_keyframe(keyframe_from_dataset(walk, i, ["labels"]))
    memory = live.snapshot()
    if zero_queries:
        memory.gaussians["queries"].data.zero_()
    memory.extra["frames"] = [walk.frames[i].name for i in walk.train_indices]
    return memory.save(out)


def _start_worker(tmp_path, announced, infos):
    from types import SimpleNamespace

    from m3_ros.live_worker import LiveWorker

    def fail(msg):
        raise AssertionError(msg)

    log = SimpleNamespace(info=infos.append, warning=fail, error=fail)
    return LiveWorker(
        tmp_path / "rec", tmp_path / "mem", ["labels"],
        lambda path, name: announced.append((name or Path(path).name, Path(path))),
        log, publish_every=7, idle_publish_s=0.5, compare_frames=4,
    )  # fmt: skip


def _decisions(infos) -> list[str]:
    return [m for m in infos if "serving the" in m]


def test_a_trained_memory_that_measures_better_is_kept(tmp_path):
    """The trained memory (memories_dir/walk, found on disk as after a restart) also folded the
    held-out views: it decodes them better (1-cos 0.085 vs 0.18 measured), so neither live
    snapshot is announced; the trained memory is announced once (the servers get the winner)."""
    walk = make_synthetic_scene(tmp_path / "rec" / "walk", num_frames=WALK_FRAMES, width=40,
                                height=30)  # fmt: skip
    trained = _memory_of(walk, range(WALK_FRAMES), tmp_path / "mem" / "walk")
    announced, infos = [], []
    worker = _start_worker(tmp_path, announced, infos)
    worker.submit("walk")
    wait_for(lambda: len(_decisions(infos)) == 2, 60, "two decisions")
    worker.close()
    assert announced == [("walk", trained)]
    for d in _decisions(infos):
        assert "serving the trained memory: 1-cos[labels] live" in d
        assert "on 3 held-out keyframes" in d, d
        live_cos, trained_cos = (float(x) for x in re.findall(r"(?:live|trained) ([\d.]+)", d))
        assert trained_cos < live_cos
    live = json.loads((tmp_path / "mem" / "walk" / "live" / "memory.json").read_text())
    assert live["extra"]["live"]["keyframes"] == WALK_FRAMES - 3  # the held-out views not in
    assert not {walk.frames[i].name for i in (0, 8, 16)} & set(live["extra"]["frames"])


def test_a_live_snapshot_that_measures_better_is_announced_until_training_beats_it(tmp_path):
    """The trained memory's queries are zeroed (1-cos 0.39 on the held-out views): both live
    snapshots are announced. Then a TrainMemory run hands over a memory that measures better:
    it is announced (and the live memory no longer is)."""
    walk = make_synthetic_scene(tmp_path / "rec" / "walk", num_frames=WALK_FRAMES, width=40,
                                height=30)  # fmt: skip
    _memory_of(walk, walk.train_indices, tmp_path / "mem" / "walk", zero_queries=True)
    announced, infos = [], []
    worker = _start_worker(tmp_path, announced, infos)
    worker.submit("walk")
    wait_for(lambda: len(_decisions(infos)) == 2, 60, "two decisions")
    assert [name for name, _ in announced] == ["walk.live", "walk.live"]
    assert all("serving the live memory" in d for d in _decisions(infos)), infos
    better = _memory_of(walk, range(WALK_FRAMES), tmp_path / "mem" / "good")
    worker.trained("walk", better)
    wait_for(lambda: len(_decisions(infos)) == 3, 60, "the decision on the trained memory")
    worker.close()
    assert "serving the trained memory" in _decisions(infos)[2]
    assert announced[2:] == [("good", better)]


def test_a_finished_training_run_is_announced_only_if_it_measures_better(spawn, client, tmp_path):
    """ROS: a trainer with ``live`` on receives the walk (test views 0, 8, 16 held out of the
    live fold), announces its live snapshot, then runs a TrainMemory goal for the recording (a
    few steps). The trainer hands the result to the worker, which logs its decision with both
    numbers and announces the winner: the next memory on /trainer/memory is the one chosen."""
    from m3_core.data import load_dataset
    from m3_core.memory.archive import memory_digest
    from m3_ros.action import TrainMemory
    from m3_ros.msg import MemoryArchive
    from tests.ros.test_trust import result_of, send_goal

    walk = make_synthetic_scene(
        tmp_path / "scene", num_frames=WALK_FRAMES, width=80, height=60, feature_stride=4
    )
    received = tmp_path / "trainer_rec" / "walk"
    shutil.copytree(walk.root / "features", received / "features")
    announced = client.collect(MemoryArchive, "/trainer/memory", latched_qos(10))
    trainer = spawn(
        "trainer",
        trainer_params(
            tmp_path,
            iterations=30,
            live=True,
            live_features=["labels"],
            live_publish_every=100,  # one snapshot, when the stream pauses
            live_publish_idle_s=1.0,
        ),
    )
    pub = client.node.create_publisher(Keyframe, "/collector/keyframes", latched_qos(100))
    wait_for(lambda: pub.get_subscription_count() > 0, 30, "the trainer's subscription", trainer)
    for k in range(WALK_FRAMES):
        pub.publish(keyframe_msg(walk, k))
    live_dir = tmp_path / "mem" / "walk" / "live"

    def every_training_view_announced() -> bool:
        if not (received / "transforms.json").is_file() or not (live_dir / "memory.json").exists():
            return False
        rec = load_dataset(received)
        train = {rec.frames[i].name for i in rec.train_indices}
        folded = json.loads((live_dir / "memory.json").read_text())["extra"]["frames"]
        return (
            len(rec.frames) == WALK_FRAMES
            and train <= set(folded)
            and bool(announced)
            and announced[-1].sha256 == memory_digest(live_dir)
        )

    wait_for(every_training_view_announced, 60, "the live snapshot of the walk", trainer)
    before = len(announced)
    accepted, handle = send_goal(client, TrainMemory.Goal(recording_id="walk"))
    res = result_of(handle, 300)
    assert accepted and res.success, res.message
    wait_for(lambda: "serving the" in trainer.output(), 60, "the decision", trainer)
    wait_for(lambda: len(announced) > before, 30, "the announcement", trainer)
    decision = re.search(r"serving the (live|trained) memory: .*", trainer.output()).group(0)
    live_cos, trained_cos = (float(x) for x in re.findall(r"(?:live|trained) ([\d.]+)", decision))
    assert "1-cos[labels]" in decision and "held-out keyframes" in decision, decision
    clearly = live_cos < (1.0 - COS_MARGIN) * trained_cos  # the rule (m3_core.live.choose)
    if "serving the live memory" in decision:
        assert clearly and announced[-1].name == "walk.live", decision
    else:
        assert not clearly and announced[-1].name == "walk", decision
    assert trainer.alive()
