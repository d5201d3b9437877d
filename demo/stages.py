"""The demo's stages that talk to the running nodes: collect, train, ground, navigate, and
the scoring of grounding answers against the scene's true boxes (used by :mod:`demo.run`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from demo.stack import NodeStack

RECORDING = "walk"
HIT_RADIUS = 0.3  # metres


class Stages:
    """Prints numbered stages and records their wall times (seconds)."""

    def __init__(self, total: int) -> None:
        self.total, self.k, self.times = total, 0, {}
        self.t0 = time.monotonic()

    def start(self, name: str, what: str) -> None:
        self.k += 1
        self.name, self.t = name, time.monotonic()
        print(f"\n[{self.k}/{self.total}] {name}: {what}", flush=True)

    def done(self, note: str = "") -> None:
        dt = time.monotonic() - self.t
        self.times[self.name] = round(dt, 2)
        print(f"    done in {dt:.1f} s{'  ' + note if note else ''}", flush=True)


def say(text: str) -> None:
    print(f"    {text}", flush=True)


def keyframe_count(root: Path) -> int:
    f = root / "transforms.json"
    try:
        return len(json.loads(f.read_text())["frames"]) if f.exists() else 0
    except (OSError, ValueError, KeyError):
        return 0


def wait_until(pred, timeout: float, stack: NodeStack, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        dead = stack.dead()
        if dead:
            raise SystemExit(f"demo: node {dead[0]} exited:\n{stack.tail(dead[0])}")
        time.sleep(poll)
    raise SystemExit(f"demo: timed out waiting for {what}")


def collect(client, args, frames, stack: NodeStack, rec: Path, on_start=None) -> dict:
    """Publish the walk (``on_start(t0)`` right before the first frame) and wait until the
    collector has received it all and written every keyframe."""
    from demo import sim_robot
    from m3_ros.msg import CollectorStatus

    status = client.collect(CollectorStatus, "/collector/status", depth=1)
    pub = sim_robot.WalkPublisher(client.node)
    wait_until(lambda: pub.subscribers() > 0, 60, stack, "the collector to subscribe")
    time.sleep(1.0)  # and for the collector's side of the discovery

    def progress(k: int, n: int | None = None) -> None:
        if k % 20 == 0 or k == n:
            of = f"/{n}" if n else ""
            say(f"published {k}{of} frames, keyframes {keyframe_count(rec)}")

    t0 = time.monotonic()
    if on_start is not None:
        on_start(t0)
    if args.from_bag:
        from demo import bag

        n = sim_robot.replay(pub, bag.read_bag(args.from_bag), on_frame=progress)
    else:
        sim_robot.publish_frames(pub, frames, args.rate, on_frame=progress)
        n = len(frames)
    publish_s = time.monotonic() - t0

    def caught_up() -> bool:  # every image in (DDS may resend some seconds later), all written
        s = status[-1] if status else None
        return bool(s) and s.images_received >= n and not s.frames_pending + s.keyframes_queued

    wait_until(caught_up, 120, stack, f"the collector to receive and write {n} frames")
    s = status[-1]
    say(f"collector: {s.images_received} images, {s.frames_paired} paired, "
        f"{s.frames_rejected} rejected, {s.keyframes} keyframes")  # fmt: skip
    return {"published": n, "keyframes": s.keyframes, "publish_s": round(publish_s, 2)}


def memory_dir(out: Path) -> Path:
    """Where the trainer writes the demo's memory: inside its trusted ``memories_dir``."""
    return out / "memories" / RECORDING


def train(client, args, out: Path, stack: NodeStack) -> tuple[object, dict]:
    from m3_ros.action import TrainMemory

    goal = TrainMemory.Goal(
        recording_id=RECORDING,  # the keyframes the collector streamed to the trainer
        features=[args.features],
        iterations=int(args.iterations),
        device="cpu",
        output_path=str(memory_dir(out).resolve()),
    )
    stage_times: dict[str, float] = {}
    state = {"stage": "", "t": time.monotonic(), "printed": 0.0}

    def feedback(fb) -> None:
        now = time.monotonic()
        if fb.stage != state["stage"]:
            if state["stage"]:  # a stage may recur (checkpoint "saving" mid-training)
                prev = stage_times.get(state["stage"], 0.0)
                stage_times[state["stage"]] = round(prev + now - state["t"], 2)
            state.update(stage=fb.stage, t=now, printed=0.0)
        if now - state["printed"] < 3.0 and fb.step != fb.total:
            return
        state["printed"] = now
        eta = f"ETA {fb.eta_seconds:.0f} s" if fb.eta_seconds == fb.eta_seconds else ""
        extra = ""
        if fb.stage == "training":
            extra = f"loss {fb.loss:.4f}  PSNR {fb.psnr:.1f} dB  {fb.num_gaussians} Gaussians"
        say(f"{fb.stage:<12} {fb.step:>5}/{fb.total:<5} {extra}  {eta}")

    result = client.train("/trainer/train_memory", goal, feedback, timeout=args.timeout)
    if state["stage"]:
        prev = stage_times.get(state["stage"], 0.0)
        stage_times[state["stage"]] = round(prev + time.monotonic() - state["t"], 2)
    if result is None or not result.success:
        why = result.message if result is not None else "no result (timeout or rejected)"
        raise SystemExit(f"demo: training failed: {why}\n{stack.tail('trainer')}")
    return result, stage_times


def decided(items: list[tuple[float, str]], goal_sent: float, result_in: float) -> str | None:
    """The trainer's announcement that follows a TrainMemory result, from ``items`` ((arrival
    time, name) in order): the trained memory (announced under the recording's name) after
    the goal was sent, or whatever arrived after the result came in (the live worker decides
    after the result, and announces the live snapshot again when it keeps it). A live snapshot
    announced while training ran is not the decision. None until there is one."""
    for t, name in items:
        if (name == RECORDING and t >= goal_sent) or t >= result_in:
            return name
    return None


def wait_served(client, news, times: tuple[float, float], out: Path, query: str,
                stack: NodeStack) -> str:  # fmt: skip
    """After training (``times``: when the goal was sent and its result came in), the
    trainer's decision (:func:`decided` over ``news``, :class:`demo.live.Announcements`): the
    trained memory, or the live one kept because it measured clearly better; wait until
    GroundObject answers from it. Returns its name."""
    from m3_ros.srv import GroundObject

    wait_until(lambda: decided(news.items, *times) is not None, 300, stack,
               "the trainer's announcement")  # fmt: skip
    name = decided(news.items, *times)
    path = memory_dir(out) if name == RECORDING else memory_dir(out) / "live"

    def serving() -> bool:
        r = client.call(GroundObject, "/memory_server/ground_object",
                        GroundObject.Request(text=query), timeout=30)  # fmt: skip
        return r is not None and r.success and r.message.endswith(f"in memory {path.resolve()}")

    wait_until(serving, 120, stack, f"the memory server to serve {name}", poll=0.5)
    return name


def ground_all(client, labels: list[str], absent: str) -> tuple[list[dict], list[float]]:
    from m3_ros.srv import GroundObject

    answers, latencies = [], []
    for text in labels + [absent]:
        t0 = time.perf_counter()
        res = client.call(GroundObject, "/memory_server/ground_object",
                          GroundObject.Request(text=text, max_results=3))  # fmt: skip
        latencies.append((time.perf_counter() - t0) * 1000)
        objs = []
        if res is not None and res.success:
            for o in res.objects:
                c = o.center.pose.position
                objs.append({"score": float(o.score), "center": [c.x, c.y, c.z],
                             "size": [o.size.x, o.size.y, o.size.z],
                             "num_gaussians": int(o.num_gaussians)})  # fmt: skip
        msg = res.message if res is not None else "no answer"
        answers.append({"query": text, "present": text != absent, "objects": objs, "msg": msg})
    return answers, latencies


def navigate(client, labels: list[str], stack: NodeStack) -> list[dict]:
    from geometry_msgs.msg import PoseStamped
    from std_msgs.msg import String

    goals = client.collect(PoseStamped, "/goal_pose")
    status = client.collect(String, "/nav_bridge/status")
    cmd = client.node.create_publisher(String, "/nav_bridge/command", 10)
    wait_until(lambda: cmd.get_subscription_count() > 0, 30, stack, "the nav bridge")
    out = []
    for text in labels:
        n_goals, n_status = len(goals), len(status)
        cmd.publish(String(data=text))
        deadline = time.monotonic() + 20
        while len(status) == n_status and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        goal = None
        if len(goals) > n_goals:
            p, q = goals[-1].pose.position, goals[-1].pose.orientation
            goal = {"x": p.x, "y": p.y, "quat_xyzw": [q.x, q.y, q.z, q.w]}
        said = status[-1].data if len(status) > n_status else "no status"
        say(f"nav bridge: {said}")
        out.append({"query": text, "goal": goal, "status": said})
    return out


def to_box(center, truth: dict) -> float:
    """Distance (m) of ``center`` to the true box ``truth`` ({center, size}; 0 inside it)."""
    import numpy as np

    err = np.asarray(center, dtype=float) - np.asarray(truth["center"], dtype=float)
    half = np.asarray(truth["size"], dtype=float) / 2
    return float(np.linalg.norm(np.maximum(np.abs(err) - half, 0.0)))


def score_grounding(answers: list[dict], truth: list[dict]) -> list[dict]:
    """Per query: distance of the top answer's centre to the true box (m, 0 inside it: where
    the robot must go; a hit within HIT_RADIUS) and to the true centre (a box seen from one
    side only is grounded on its visible faces, up to half its size from its centre)."""
    import numpy as np

    by_label = {t["label"]: t for t in truth}
    rows = []
    for a in answers:
        row = {"query": a["query"], "present": a["present"], "answered": bool(a["objects"])}
        top = a["objects"][0] if a["objects"] else None
        if top is not None:
            row.update(score=round(top["score"], 4), center=[round(v, 3) for v in top["center"]])
        if a["present"]:
            truth_row = by_label[a["query"]]
            if top is not None:
                err = np.array(top["center"]) - np.array(truth_row["center"])
                row["to_box_m"] = round(to_box(top["center"], truth_row), 3)
                row["error_m"] = round(float(np.linalg.norm(err)), 3)
                row["error_xy_m"] = round(float(np.linalg.norm(err[:2])), 3)
            row["hit"] = top is not None and row["to_box_m"] <= HIT_RADIUS
        else:
            row["correct"] = top is None  # an absent object must get no answer
        rows.append(row)
    return rows
