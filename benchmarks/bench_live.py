"""Benchmark the live memory (issue 18.2): a simulated walk answered while it happens.

A random furnished room (``random_objects``, as bench_grounding; seeds printed) is rendered
along the synthetic camera loop (``--frames`` keyframes at ``--width`` x ``--height``, label
features of the chosen ``--setting``), then streamed keyframe by keyframe into a
:class:`m3_core.live.LiveMemory` on a simulated clock: keyframe k arrives at ``k / --rate``
seconds; its update starts when it has arrived and the previous one is done; after the
update (every ``--publish-every`` keyframes, and after the last) the memory is *published*:
snapshot + grounding index + ``MemoryPredictor`` with its caches prepared (what the memory
server would swap in), and every object of the room is grounded (outside the clock) with the
default parameters.

Per keyframe: update latency (wall and CPU seconds; the CPU is shared, so both are shown),
publish latency, Gaussians, PSC rows, objects answered correctly so far.
Per object: the keyframe where it is first seen (>= 20 pixels of its instance mask), the first
published memory that grounds it correctly (top-1 answer within 0.3 m of its box), and the
time between the two on the simulated clock; whether the final live memory and the fully
trained memory (``Trainer`` with ``TrainConfig.sized_for``, as ``m3 train`` defaults; skip
with ``--skip-trained``) ground it.

Targets (issue 18, CPU): update <= 1 s per 320x240 keyframe, first correct answer <= 10 s after
an object is first seen, live accuracy >= 80 % of the trained memory's, end of walk ->
answers with no extra wait (lag of the last publish after the last keyframe's arrival).

    python benchmarks/bench_live.py [--rooms 1] [--seeds 3] [--rate 1] [--skip-trained]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a shared CPU

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_grounding import add_room_arguments, room_seeds  # noqa: E402

from m3_core.config import MemoryConfig  # noqa: E402
from m3_core.data.features import FeatureStore  # noqa: E402
from m3_core.data.synthetic import make_synthetic_scene, read_objects_json  # noqa: E402
from m3_core.data.transforms import read_transforms_dataset  # noqa: E402
from m3_core.live import LiveConfig, LiveMemory, keyframe_from_dataset  # noqa: E402
from m3_core.query import MemoryPredictor, TextEncoder  # noqa: E402
from m3_core.types import ModelSpec  # noqa: E402

HIT_RADIUS = 0.3  # metres, from the answer's centre to the true box (bench_grounding's rule)
MIN_SIGHTING_PIXELS = 20  # an object is "seen" in a keyframe with this much of its mask
SETTINGS = {  # name -> make_synthetic_scene feature arguments (as bench_grounding)
    "exact": {"feature_stride": 1, "feature_noise": 0.0, "cell_noise": 0.0},
    "coarse": {"feature_stride": 8, "cell_noise": 0.15},
}


def box_distance(p: np.ndarray, center, size) -> float:
    """Distance from point ``p`` [3] to the axis-aligned box (0 inside)."""
    d = np.maximum(np.abs(p - np.asarray(center)) - np.asarray(size) / 2, 0.0)
    return float(np.linalg.norm(d))


def ground_all(pred: MemoryPredictor, truth: list[dict]) -> dict[str, float]:
    """label -> distance of the top answer to the object's box (inf: no answer)."""
    out = {}
    for o in truth:
        found = pred.ground(o["label"])
        out[o["label"]] = (
            box_distance(found[0].center, o["center"], o["size"]) if found else math.inf
        )
    return out


def first_sightings(ds, truth: list[dict]) -> dict[str, int]:
    """label -> first keyframe index whose instance image shows the object."""
    import cv2

    seen: dict[str, int] = {}
    for k, frame in enumerate(ds.frames):
        inst = cv2.imread(str(ds.root / "instances" / f"{frame.name}.png"), cv2.IMREAD_UNCHANGED)
        for o in truth:
            if o["label"] not in seen and int((inst == o["id"]).sum()) >= MIN_SIGHTING_PIXELS:
                seen[o["label"]] = k
    return seen


def make_room(seed: int, args, work: Path):
    from m3_core.data.synthetic_rooms import random_objects

    rng = np.random.default_rng(seed)
    objects = random_objects(int(rng.integers(args.min_objects, args.max_objects + 1)), seed)
    scene = work / f"{args.setting}_{seed}" / "scene"
    if (scene / "transforms.json").exists():  # --workdir reuse
        return read_transforms_dataset(scene / "transforms.json")
    return make_synthetic_scene(
        scene, num_frames=args.frames, width=args.width, height=args.height, objects=objects,
        seed=seed, **SETTINGS[args.setting],
    )  # fmt: skip


def live_config(items: list[str]) -> LiveConfig:
    """LiveConfig with ``key=value`` overrides (values parsed as int, then float)."""
    import dataclasses

    kw: dict = {}
    names = {f.name: f.type for f in dataclasses.fields(LiveConfig)}
    for item in items:
        key, _, value = item.partition("=")
        if key not in names:
            raise SystemExit(f"--live: unknown LiveConfig field {key!r} ({', '.join(names)})")
        kw[key] = int(value) if names[key] == "int" else float(value)
    return LiveConfig(**kw)


def run_live(ds, truth: list[dict], args) -> dict:
    """Stream the walk on the simulated clock (module doc)."""
    store = FeatureStore(ds.root, "labels")
    texts, vectors = store.vocabulary()
    encoder = TextEncoder(vocabularies={"labels": (texts, vectors)})
    spec = ModelSpec("labels", int(vectors.shape[1]), args.channels, args.psc_threshold)
    live = LiveMemory(MemoryConfig(models=[spec], sh_degree=0), live_config(args.live))
    busy_until, rows, first_ok = 0.0, [], {}
    dist = {o["label"]: math.inf for o in truth}
    for k in range(len(ds)):
        kf = keyframe_from_dataset(ds, k, ["labels"])
        arrival = k / args.rate
        start = max(arrival, busy_until)
        w0, c0 = time.perf_counter(), time.process_time()
        stats = live.add_keyframe(kf)
        w1, c1 = time.perf_counter(), time.process_time()
        if k % args.publish_every == args.publish_every - 1 or k == len(ds) - 1:
            pred = MemoryPredictor(live.snapshot(), encoder, index=live.grounding_index())
            pred.prepare()
            w2 = time.perf_counter()
            dist = ground_all(pred, truth)
        else:  # not published: the server still answers from the previous snapshot
            w2 = w1
        ready = start + (w2 - w0)
        busy_until = ready
        for label, d in dist.items():
            if d <= HIT_RADIUS and label not in first_ok:
                first_ok[label] = (k, ready)
        rows.append({
            "k": k, "arrival": arrival, "start": start, "update_s": w1 - w0,
            "update_cpu_s": c1 - c0, "publish_s": w2 - w1, "ready": ready,
            "gaussians": stats["gaussians"], "added": stats["gaussians_added"],
            "bank_rows": stats["bank_rows"]["labels"],
            "hits": sum(d <= HIT_RADIUS for d in dist.values()),
            "stages": {key: v for key, v in stats.items() if key.endswith("_s")},
        })  # fmt: skip
        print(f"{k:>4}{arrival:>8.1f}{start:>8.1f}{1e3 * (w1 - w0):>9.0f}"
              f"{1e3 * (c1 - c0):>8.0f}{1e3 * (w2 - w1):>9.0f}{stats['gaussians']:>8}"
              f"{stats['gaussians_added']:>7}{rows[-1]['bank_rows']:>7}"
              f"{rows[-1]['hits']:>4}/{len(truth):<3}"
              + " ".join(f"{key[:-2]} {1e3 * v:.0f}" for key, v in rows[-1]["stages"].items()),
              flush=True)  # fmt: skip
    return {"rows": rows, "first_ok": first_ok, "final": dist, "live": live}


def run_trained(ds, seed: int, args, work: Path) -> tuple[dict[str, float], float]:
    from m3_core.train import FeatureSpec, TrainConfig, Trainer

    truth = read_objects_json(ds.root)["objects"]
    mem_dir = work / f"{args.setting}_{seed}" / "trained"
    t0 = time.perf_counter()
    finished = (mem_dir / "memory.json").exists() and not (mem_dir / "train_state.json").exists()
    if not finished:  # new, or resumed from the checkpoint of an interrupted run
        cfg = TrainConfig.sized_for(
            "cpu", len(ds.train_indices), args.width, args.height,
            features=[FeatureSpec("labels")], device="cpu", seed=seed,
            **({"iterations": args.iterations} if args.iterations else {}),
        )  # fmt: skip
        Trainer(ds, cfg, mem_dir).run()
    train_s = time.perf_counter() - t0
    pred = MemoryPredictor.load(mem_dir, device="cpu")
    pred.prepare()
    return ground_all(pred, truth), train_s


def plot(rooms: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from m3_core.io import atomic_path

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    for r in rooms:
        ks = [row["k"] for row in r["rows"]]
        a.plot(ks, [row["update_s"] for row in r["rows"]], label=f"room {r['seed']} wall")
        a.plot(ks, [row["update_cpu_s"] for row in r["rows"]], ":", label=f"room {r['seed']} CPU")
        t = [row["ready"] for row in r["rows"]]
        b.step(t, [row["hits"] for row in r["rows"]], where="post", label=f"room {r['seed']}")
        for k in r["sightings"].values():
            b.axvline(k / r["rate"], color="0.85", lw=0.8, zorder=0)
    a.axhline(1.0, color="r", lw=0.8, label="target 1 s")
    a.set(xlabel="keyframe", ylabel="update latency (s)", title="live update per keyframe")
    b.set(xlabel="simulated time (s)", ylabel="objects grounded within 0.3 m",
          title="answers during the walk (grey: first sightings)")  # fmt: skip
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png")
    print(f"plot: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_room_arguments(p, rooms=1, size=(320, 240))
    p.add_argument("--setting", default="coarse", choices=sorted(SETTINGS))
    p.add_argument("--rate", type=float, default=1.0, help="keyframes per second of the walk")
    p.add_argument("--publish-every", type=int, default=1, help="keyframes per snapshot")
    p.add_argument("--channels", type=int, default=8, help="live query channels (labels: 8)")
    p.add_argument("--psc-threshold", type=float, default=0.8, help="live PSC threshold")
    p.add_argument("--live", action="append", default=[], metavar="KEY=VALUE",
                   help="LiveConfig override, repeatable (e.g. fit_steps=0)")  # fmt: skip
    p.add_argument("--iterations", type=int, default=0, help="trained memory; 0: sized default")
    p.add_argument("--skip-trained", action="store_true")
    p.add_argument("--plot", default="bench_live.png")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    seeds = room_seeds(args)
    print(f"live walk: {len(seeds)} room(s) {seeds}, setting {args.setting}, {args.frames} "
          f"keyframes {args.width}x{args.height} at {args.rate} /s, CPU threads "
          f"{torch.get_num_threads()}, live spec labels:{args.channels}:"
          f"{args.psc_threshold}, {live_config(args.live)}")  # fmt: skip
    rooms = []
    with tempfile.TemporaryDirectory(prefix="m3-bench-live-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        for seed in seeds:
            ds = make_room(seed, args, work)
            truth = read_objects_json(ds.root)["objects"]
            sightings = first_sightings(ds, truth)
            print(f"\nroom {seed}: {len(truth)} objects")
            print(f"{'kf':>4}{'arrive':>8}{'start':>8}{'upd ms':>9}{'CPU ms':>8}{'pub ms':>9}"
                  f"{'N':>8}{'+N':>7}{'PSC':>7}{'ok':>8}  stages ms")  # fmt: skip
            r = run_live(ds, truth, args)
            r.update(seed=seed, rate=args.rate, sightings=sightings)
            r["trained"], r["train_s"] = ({}, math.nan)
            if not args.skip_trained:
                r["trained"], r["train_s"] = run_trained(ds, seed, args, work)
            r.pop("live")
            rooms.append(r)
            report_room(r, truth)
    summary = summarise(rooms)
    if args.plot:
        plot(rooms, args.plot)
    if args.json:
        from m3_core.io import atomic_write_text

        atomic_write_text(args.json, json.dumps({"rooms": rooms, "summary": summary},
                                                indent=1, default=str))  # fmt: skip


def report_room(r: dict, truth: list[dict]) -> None:
    print(f"\n{'object':<18}{'seen kf':>8}{'ok kf':>7}{'s to answer':>12}{'live m':>8}"
          f"{'trained m':>10}")  # fmt: skip
    for o in truth:
        lab = o["label"]
        seen = r["sightings"].get(lab)
        ok = r["first_ok"].get(lab)
        wait = ok[1] - seen / r["rate"] if ok is not None and seen is not None else math.nan
        tr = r["trained"].get(lab, math.nan)
        seen_s = "-" if seen is None else str(seen)
        ok_s = "-" if ok is None else str(ok[0])
        print(f"{lab:<18}{seen_s:>8}{ok_s:>7}{wait:>12.1f}{r['final'][lab]:>8.2f}{tr:>10.2f}")
    if not math.isnan(r["train_s"]):
        print(f"trained memory: {r['train_s']:.0f} s wall to train")


def summarise(rooms: list[dict]) -> dict:
    rows = [row for r in rooms for row in r["rows"]]
    upd = sorted(row["update_s"] for row in rows)
    cpu = sorted(row["update_cpu_s"] for row in rows)
    pub = sorted(row["publish_s"] for row in rows)
    waits = []
    for r in rooms:
        for lab, k in r["sightings"].items():
            ok = r["first_ok"].get(lab)
            waits.append(ok[1] - k / r["rate"] if ok else math.inf)
    n_obj = sum(len(r["final"]) for r in rooms)
    live_hits = sum(d <= HIT_RADIUS for r in rooms for d in r["final"].values())
    trained = [d for r in rooms for d in r["trained"].values()]
    trained_hits = sum(d <= HIT_RADIUS for d in trained)
    lag = [r["rows"][-1]["ready"] - r["rows"][-1]["arrival"] for r in rooms]

    def q(xs, f):
        return xs[min(len(xs) - 1, int(f * len(xs)))] if xs else math.nan

    s = {
        "update_s": {"median": statistics.median(upd), "p90": q(upd, 0.9), "max": upd[-1]},
        "update_cpu_s": {"median": statistics.median(cpu), "p90": q(cpu, 0.9), "max": cpu[-1]},
        "publish_s": {"median": statistics.median(pub), "p90": q(pub, 0.9), "max": pub[-1]},
        "seconds_to_answer": {"median": statistics.median(waits) if waits else math.nan,
                              "max": max(waits) if waits else math.nan,
                              "answered": sum(math.isfinite(w) for w in waits),
                              "seen": len(waits)},
        "live_hit": live_hits / max(n_obj, 1),
        "trained_hit": trained_hits / max(len(trained), 1) if trained else math.nan,
        "end_lag_s": max(lag),
    }  # fmt: skip
    s["live_vs_trained"] = s["live_hit"] / s["trained_hit"] if trained_hits else math.nan
    print(f"\n{'':<26}{'median':>8}{'p90':>8}{'max':>8}")
    for key, name in (("update_s", "update wall s"), ("update_cpu_s", "update CPU s"),
                      ("publish_s", "publish wall s")):  # fmt: skip
        v = s[key]
        print(f"{name:<26}{v['median']:>8.2f}{v['p90']:>8.2f}{v['max']:>8.2f}")
    t = s["seconds_to_answer"]
    print(
        f"{'s from sighting to answer':<26}{t['median']:>8.1f}{'':>8}{t['max']:>8.1f}"
        f"   ({t['answered']}/{t['seen']} seen objects answered during the walk)"
    )
    print(f"top-1 hit: live {100 * s['live_hit']:.1f} %, trained {100 * s['trained_hit']:.1f} %"
          f" (live / trained {s['live_vs_trained']:.2f}); end of walk lag "
          f"{s['end_lag_s']:.2f} s")  # fmt: skip
    print(
        "targets: update <= 1 s, answer <= 10 s after sighting, live >= 0.8 x trained, "
        "no wait at the end"
    )
    return s


if __name__ == "__main__":
    main()
