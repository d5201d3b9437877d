"""``python -m demo.run``: the whole product on a simulated quadruped, end to end.

Stages (each printed with its wall time):

1. scene    render the walk of the simulated robot (:mod:`demo.sim_robot`)
2. nodes    start collector, trainer (live memory on), memory_server, nav_bridge as processes
3. collect  publish the walk at the robot's rate; the collector keeps keyframes and streams
            them to the trainer, which folds each into a live memory and announces it
4. live     answers during the walk: GroundObject for every object about once a second from
            the first frame on (:mod:`demo.live`); when each was first seen and first answered
5. train    a ``TrainMemory`` goal for the streamed recording (M3 trained on CPU at
            ``--train-size``; features of the images as recorded); feedback shown
6. serve    the trainer announces the trained memory, or keeps the live one when that measures
            better on held-out keyframes; the memory server swaps it in
7. ground   GroundObject for every object in the room and one that is absent; the nav
            bridge turns each into a stand-off goal on /goal_pose
8. report   OUT/report: map.png, views.png, summary.json, summary.md (:mod:`demo.report`)

Re-running is safe: the products of an earlier demo run in OUT (recordings, memory, logs,
report) are removed first; a non-empty OUT that is not a demo folder is refused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from demo import scene
from demo.live import Announcements, LivePoller, first_sightings, live_caught_up, wait_live
from demo.stack import NodeStack, isolate_ros, write_params
from demo.stages import (
    HIT_RADIUS,
    RECORDING,
    Stages,
    collect,
    ground_all,
    memory_dir,
    navigate,
    say,
    score_grounding,
    train,
    wait_served,
)

MARKER = ".m3_demo"
PRODUCTS = ("recordings", "trainer_recordings", "memories", "memory", "logs", "report")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--frames", type=int, default=120, help="frames the robot publishes")
    p.add_argument("--iterations", type=int, default=1000, help="training steps")
    p.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("W", "H"),
                   help="camera image size (features are extracted at this size)")  # fmt: skip
    p.add_argument("--train-size", type=int, nargs=2, default=(160, 120), metavar=("W", "H"),
                   help="training image size (the trainer's max_image_size)")  # fmt: skip
    p.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    p.add_argument("--features", default="effnet", help="feature model: effnet | clip")
    p.add_argument("--weights-dir", default="", help="local model weights (for clip)")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="grounding threshold (0: the server's calibrated default)")  # fmt: skip
    p.add_argument("--from-bag", default="", help="replay this rosbag2 walk instead")
    p.add_argument(
        "--lens",
        default="pinhole",
        choices=("pinhole", "wide"),
        help="the robot camera's lens (wide: distorted, undistorted by the collector)",
    )
    p.add_argument("--quick", action="store_true", help="a fast, rough run (smoke test)")
    p.add_argument("--timeout", type=float, default=1200.0, help="training time limit (s)")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.iterations = min(args.frames, 48), min(args.iterations, 300)
    if args.features == "clip" and not args.weights_dir:
        p.error("--features clip needs --weights-dir DIR with the CLIP weights")
    return args


def prepare_out(out: Path) -> None:
    """Create OUT, or clean the products of an earlier demo run in it (module doc)."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise SystemExit(f"demo: {out} is not empty and not a demo output folder; use --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("m3 demo output folder (safe to delete)\n")
    for name in PRODUCTS:
        if (out / name).exists():
            shutil.rmtree(out / name)


def node_params(args: argparse.Namespace, out: Path) -> dict[str, dict]:
    w, h = args.train_size
    return {
        "collector": {
            "depth_topic": "/camera/depth",
            "output_dir": str(out / "recordings"),
            "recording_id": RECORDING,
            "stream_keyframes": True,  # to the trainer's live memory (the robot's default)
            # one host: reliable delivery, and time for DDS to resend a lost message, so every
            # published frame reaches the keyframe policy (best effort lost ~1/3 of them here)
            "sensor_qos": "reliable",
            "max_delay": 3.0,
            "queue_size": 60,
        },
        "trainer": {
            "recordings_dir": str(out / "trainer_recordings"),  # the streamed keyframes
            "memories_dir": str(out / "memories"),
            "features": [args.features],
            "weights_dir": args.weights_dir,
            "iterations": int(args.iterations),
            "device": "cpu",
            "max_image_size": [int(w), int(h)],
            "live": True,
        },
        "memory_server": {
            "load_roots": [str(out / "memories")],  # the trainer's folder: loaded in place
            "memories_dir": str(out / "received_memories"),
            "device": "cpu",
            "weights_dir": args.weights_dir,
            "min_score": float(min_score(args)),
        },
        "nav_bridge": {"standoff_distance": 0.8},
    }


def min_score(args: argparse.Namespace) -> float:
    """--min-score; 0 (the default) leaves the memory server's own default threshold."""
    return float(args.min_score)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    prepare_out(out)
    isolate_ros(out / "logs" / "ros")
    st = Stages(8)
    objects = scene.demo_objects()
    labels = [o.label for o in objects]
    print(f"m3 demo -> {out}\n  objects: {', '.join(labels)}; absent: {scene.ABSENT_QUERY}; "
          f"features: {args.features}; {args.frames} frames at {args.size[0]}x{args.size[1]}; "
          f"{args.iterations} training steps on CPU")  # fmt: skip

    lens = " through a wide-angle lens" if args.lens == "wide" else ""
    st.start("scene", f"render the simulated quadruped's walk{lens}")
    frames = []
    if not args.from_bag:
        from demo.sim_robot import render_walk

        def prog(k: int, n: int) -> None:
            if k % 30 == 0 or k == n:
                say(f"rendered {k}/{n}")

        frames = render_walk(args.frames, *args.size, on_frame=prog, lens=args.lens)
    st.done()

    st.start("nodes", "start collector, trainer, memory_server, nav_bridge")
    params = write_params(out / "params.yaml", node_params(args, out))
    stack = NodeStack(params, out / "logs")
    stack.start()
    from demo.client import DemoClient

    client = DemoClient()
    try:
        st.done(f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, logs in {out / 'logs'}")
        rec = out / "recordings" / RECORDING
        truth = scene.ground_truth(objects)
        news = Announcements(client)
        poller = LivePoller(client, truth, scene.ABSENT_QUERY)
        st.start("collect", f"publish the walk at {args.rate:g} Hz; the collector keeps and "
                 "streams keyframes; the trainer folds them into a live memory")  # fmt: skip
        collected = collect(client, args, frames, stack, rec, on_start=poller.start)
        walk_end = time.monotonic()
        st.done(f"{collected['keyframes']} keyframes of {collected['published']} frames")
        if collected["keyframes"] < 10:
            why = f"only {collected['keyframes']} keyframes"
            raise SystemExit(f"demo: {why}\n{stack.tail('collector')}")

        st.start("live", "answers from the live memory during the walk (GroundObject each second)")
        streamed = out / "trainer_recordings" / RECORDING
        wait_live(news, walk_end, stack, lambda: live_caught_up(
            streamed, memory_dir(out) / "live", collected["keyframes"]))  # fmt: skip
        poller.stop()
        live_rows = poller.rows(first_sightings(frames, args.rate))
        for r in live_rows:
            seen = f"seen at {r['seen_s']:.1f} s" if r["seen_s"] is not None else "seen: unknown"
            got = "not answered"
            if "answered_s" in r:
                got = f"answered at {r['answered_s']:.1f} s"
                got += f" ({r['delay_s']:.1f} s after)" if "delay_s" in r else ""
            say(f"{r['query']:<14} {seen:<16} {got}")
        n_live = sum("answered_s" in r for r in live_rows)
        walk_s = walk_end - poller.t0
        st.done(f"{n_live}/{len(labels)} answered live; {len(poller.false)} answers for the "
                f"absent {scene.ABSENT_QUERY!r}; the walk ended at {walk_s:.1f} s")  # fmt: skip

        st.start("train", "TrainMemory action: extract missing features, build PSC, train M3")
        goal_sent = time.monotonic()
        result, train_stages = train(client, args, out, stack)
        result_in = time.monotonic()
        st.done(f"{result.message}; {result.num_gaussians} Gaussians; PSNR {result.psnr:.1f} dB")

        st.start("serve", "the trainer announces the better memory; the server swaps it in")
        served = wait_served(client, news, (goal_sent, result_in), out, labels[0], stack)
        better = " (the live one measured clearly better on held-out views)"
        kept = "" if served == RECORDING else better
        st.done(f"serving {served}{kept}")

        st.start("ground", "ground each object (and one absent) -> nav bridge goals")
        answers, latencies = ground_all(client, labels, scene.ABSENT_QUERY)
        rows = score_grounding(answers, truth)
        for r in rows:
            if r["present"]:
                err = "no answer"
                if "error_m" in r:
                    err = f"{r['to_box_m']:.2f} m from the box ({r['error_m']:.2f} m to centre)"
                say(f"{r['query']:<14} {err:<42} {'HIT' if r['hit'] else 'miss'}")
            else:
                verdict = "no answer: correct" if r["correct"] else "answered: wrong"
                say(f"{r['query']:<14} (absent) {verdict}")
        found = [r["query"] for r in rows if r["present"] and r["answered"]]
        goals = navigate(client, found, stack)
        st.done(f"median query latency {statistics.median(latencies):.0f} ms")
    finally:
        client.close()
        stack.stop()

    st.start("report", "map, views and summary")
    from demo import report

    summary = {
        "features": args.features,
        "frames": collected["published"],
        "keyframes": collected["keyframes"],
        "image_size": list(args.size),
        "lens": args.lens,
        "train_size": list(args.train_size),
        "min_score": min_score(args),
        "iterations": int(args.iterations),
        "num_gaussians": int(result.num_gaussians),
        "psnr_db": round(float(result.psnr), 2),
        "served": served,
        "live": {
            "objects": live_rows,
            "answered": n_live,
            "absent_answers": poller.false,
            "walk_s": round(walk_s, 2),
            "polls": poller.calls,
        },
        "grounding": rows,
        "hits": sum(bool(r.get("hit")) for r in rows),
        "present": sum(r["present"] for r in rows),
        "absent_correct": all(r.get("correct", True) for r in rows),
        "goals": goals,
        "answers": answers,
        "timings_s": {
            **st.times,
            "train_stages": train_stages,
            "publish": collected["publish_s"],
        },  # fmt: skip
        "query_latency_ms": {
            "median": round(statistics.median(latencies), 1),
            "max": round(max(latencies), 1),
        },  # fmt: skip
        "truth": truth,
    }
    files = report.make_report(out / "report", memory_dir(out), rec, summary)
    st.done()
    summary["timings_s"]["report"] = st.times["report"]
    summary["timings_s"]["total"] = round(time.monotonic() - st.t0, 1)
    report.write_summary(out / "report", summary)
    absent = "not answered (correct)" if summary["absent_correct"] else "answered"
    total = summary["timings_s"]["total"]
    print(f"\n{summary['hits']}/{summary['present']} objects grounded within {HIT_RADIUS} m "
          f"of their box; absent object {absent}; total {total:.0f} s")  # fmt: skip
    print("report: " + ", ".join(str(f) for f in files + [out / "report" / "summary.md"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
