"""Memory server under load: N client processes call GroundObject for T seconds, without and
then with R processes calling RenderFeatureAt at the same time. Prints, per phase, replies,
failures (no reply within --timeout, or success=false; a missing reply is told apart as
late, stuck in the client's executor, or never answered), GroundObject p50 / p99 / max
latency, and the server's RSS over time.

    python benchmarks/bench_serving.py                       # 4 clients x 10 s, 1 renderer
    python benchmarks/bench_serving.py --clients 8 --renderers 2 --seconds 60
    python benchmarks/bench_serving.py --memory MEM --text chair
    python benchmarks/bench_serving.py --param render_nice=0   # renders at normal priority
    python benchmarks/bench_serving.py --server-cpus 0 --client-cpus 1   # one core each

Without --memory it trains the tests' synthetic room (24 frames 80x60, 200 steps, ~14k
Gaussians) into /tmp first. Runs in its own ROS domain on loopback.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from m3_ros.cpus import cpu_set

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", default="", help="memory folder (default: train a small one)")
    ap.add_argument("--text", default="chair")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--renderers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=5.0, help="a call without reply: failure")
    ap.add_argument("--render-size", default="320x240")
    ap.add_argument("--client-depth", type=int, default=256,
                    help="clients' reply queue depth (m3_ros.node_utils.CLIENT_DEPTH; rclpy's "
                    "default is 10)")  # fmt: skip
    ap.add_argument("--render-stride", type=int, default=1, help="RenderFeatureAt feature_stride")
    ap.add_argument(
        "--server-cpus",
        default="",
        metavar="LIST",
        help="pin the server to these CPUs, e.g. 0 (its cpus parameter; Linux); with "
        "--client-cpus 1 the clients stop competing with it, as on a robot whose clients run "
        "elsewhere",
    )
    ap.add_argument("--client-cpus", default="", metavar="LIST", help="pin the clients, e.g. 1")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a memory_server parameter (YAML value), e.g. render_nice=0; "
                    "repeatable")  # fmt: skip
    return ap.parse_args(argv)


def small_memory() -> Path:
    sys.path.insert(0, str(ROOT))
    from m3_core.data import load_dataset, make_synthetic_scene
    from m3_core.train import Trainer
    from tests.fixtures.training import tiny_config

    root = Path(tempfile.mkdtemp(prefix="m3_bench_serving_"))
    make_synthetic_scene(root / "scene", num_frames=24, width=80, height=60, feature_stride=4)
    cfg = tiny_config(iterations=200, init_points=4000, refine_every=50)
    Trainer(load_dataset(root / "scene"), cfg, root / "memory").run()
    return root / "memory"


def worker(kind: str, seconds: float, timeout: float, args: dict, out: mp.Queue) -> None:
    """One client process: call the service in a loop; report (latencies, failures)."""
    if args["cpus"]:
        os.sched_setaffinity(0, args["cpus"])
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from m3_ros import convert
    from m3_ros.srv import GroundObject, RenderFeatureAt

    rclpy.init()
    node = rclpy.create_node(f"bench_{kind}_{os.getpid()}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    if kind == "ground":
        srv, name = GroundObject, "/memory_server/ground_object"
        req = GroundObject.Request(text=args["text"])
    else:
        from m3_core.data.synthetic import look_at_c2w
        from m3_core.types import Camera

        w, h = args["size"]
        cam = Camera(w * 0.8, w * 0.8, w / 2, h / 2, w, h, look_at_c2w([0, -1, 0.5], 1.2))
        srv, name = RenderFeatureAt, "/memory_server/render_feature_at"
        req = RenderFeatureAt.Request(features=[args["feature"]], include_rgb=True)
        req.camera_pose = convert.pose_stamped(cam.c2w.double(), "")
        req.camera_info = convert.camera_info_msg(cam)
        req.feature_stride = args["stride"]
    from m3_ros.node_utils import service_qos

    client = node.create_client(srv, name, qos_profile=service_qos(args["client_depth"]))
    client.wait_for_service(timeout_sec=60)
    latencies, failures, messages, overdue, woken = [], 0, set(), [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        future = client.call_async(req)
        done = threading.Event()
        future.add_done_callback(lambda _, d=done: d.set())
        if not done.wait(timeout):
            executor.wake()  # a reply that arrived without waking the executor is taken now
            if done.wait(1.0):
                woken += 1
            else:
                overdue.append(future)  # kept to tell a late reply from a lost one
            failures += 1
            continue
        res = future.result()
        if res is None or not res.success:
            failures += 1
            messages.add(res.message[:80] if res else "no result")
            continue
        latencies.append(time.monotonic() - start)
    late = 0
    if overdue:
        time.sleep(timeout)  # a reply still on its way has this long to arrive
        late = sum(f.done() for f in overdue)
        for f in overdue:
            client.remove_pending_request(f)
    lost = {"woken": woken, "late": late, "never": len(overdue) - late}
    out.put((kind, latencies, failures, sorted(messages), lost))
    executor.shutdown()
    spinner.join(timeout=5.0)  # out of its wait set before the node is destroyed
    node.destroy_node()
    rclpy.shutdown()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phase(server, args, renderers: int, feature: str) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    w, h = (int(v) for v in args.render_size.split("x"))
    kw = {"text": args.text, "size": (w, h), "feature": feature, "stride": args.render_stride,
          "client_depth": args.client_depth, "cpus": cpu_set(args.client_cpus)}  # fmt: skip
    kinds = ["ground"] * args.clients + ["render"] * renderers
    procs = [
        ctx.Process(target=worker, args=(k, args.seconds, args.timeout, kw, out)) for k in kinds
    ]
    for p in procs:
        p.start()
    rss, end = [], time.monotonic() + args.seconds + 30
    results = []
    while len(results) < len(procs) and time.monotonic() < end + 60:
        rss.append(rss_mb(server.pid))
        try:
            results.append(out.get(timeout=1.0))
        except Exception:
            pass
    for p in procs:
        p.join(timeout=30)
    lat = np.concatenate([np.array(r[1]) for r in results if r[0] == "ground"] or [np.zeros(0)])
    renders = sum(len(r[1]) for r in results if r[0] == "render")
    return {
        "replies": len(lat),
        "failures": sum(r[2] for r in results if r[0] == "ground"),
        "why": sorted({m for r in results for m in r[3]}),
        "p50": float(np.percentile(lat, 50) * 1e3) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99) * 1e3) if len(lat) else float("nan"),
        "max": float(lat.max() * 1e3) if len(lat) else float("nan"),
        "renders": renders,
        "render_failures": sum(r[2] for r in results if r[0] == "render"),
        "rss": rss,
        **{k: sum(r[4][k] for r in results) for k in ("woken", "late", "never")},
        "lost_workers": len(procs) - len(results),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    memory = Path(args.memory) if args.memory else small_memory()
    from m3_core.memory import Memory

    mem = Memory.load(memory)
    feature = mem.config.models[0].name
    tmp = Path(tempfile.mkdtemp(prefix="m3_bench_server_"))
    params = tmp / "params.yaml"
    doc = {"memory_path": str(memory), "device": "cpu", "max_render_bytes": 2_000_000_000}
    if args.server_cpus:
        doc["cpus"] = ",".join(map(str, sorted(cpu_set(args.server_cpus))))  # its own parameter
    for item in args.param:
        name, _, value = item.partition("=")
        doc[name] = yaml.safe_load(value)
    params.write_text(yaml.safe_dump({"memory_server": {"ros__parameters": doc}}))
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "m3_ros.memory_server", "--ros-args", "--params-file", str(params)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while "loaded memory" not in (tmp / "server.log").read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{(tmp / 'server.log').read_text()}")
            time.sleep(0.2)
        print(f"memory {memory}: {mem.num_gaussians} Gaussians; {args.clients} GroundObject "
              f"clients x {args.seconds:g} s; renders {args.render_size} '{feature}' "
              f"stride {args.render_stride}; parameters {args.param or 'default'}; CPUs server "
              f"{args.server_cpus or 'any'}, clients {args.client_cpus or 'any'}",
              flush=True)  # fmt: skip
        rows = [("ground only", phase(server, args, 0, feature))]
        if args.renderers:
            rows.append(
                (f"+ {args.renderers} renderers", phase(server, args, args.renderers, feature))
            )
    finally:
        server.send_signal(2)
        server.wait(timeout=30)
    print("\n| phase | GroundObject replies | failures | p50 ms | p99 ms | max ms | "
          "renders (failed) | server RSS MB (start / max / end) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        rss = [v for v in r["rss"] if v == v] or [float("nan")]
        print(f"| {name} | {r['replies']} | {r['failures']} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['max']:.0f} | {r['renders']} ({r['render_failures']}) | "
              f"{rss[0]:.0f} / {max(rss):.0f} / {rss[-1]:.0f} |")  # fmt: skip
        if r["why"] or r["lost_workers"] or r["woken"] + r["late"] + r["never"]:
            print(
                f"  missing replies (all clients): {r['never']} never answered, {r['late']} "
                f"after --timeout, {r['woken']} only once the client's executor was woken; "
                f"other: {r['why']}; workers without a report: {r['lost_workers']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
