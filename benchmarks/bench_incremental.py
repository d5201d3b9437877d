"""Benchmark incremental growth: does an object first seen in new frames ground as tightly as
in a memory trained on all frames at once?

Per random room (``write_room``, seeds drawn at random unless ``--seeds``): the walk's first
half of the frames trains a memory with the default schedule; ``Trainer(incremental=True)``
then grows it with the whole walk (Gaussians seeded only where depth is unexplained, PSC banks
extended, the default schedule again), as ``m3 train --incremental`` does. A second memory is
trained on the whole walk at once. Each object is grounded in both with the defaults; objects
are split into those visible in the first half (>= 20 pixels of a training frame's instance
mask) and those first seen in the new frames. Prints per group: top-1 hits within 0.3 m of the
true box, median distance to the box and to the box's centre, for both memories.

Target (issue 15): incremental within 0.1 m of the full training's error.

    python benchmarks/bench_incremental.py [--rooms 3] [--setting coarse] [--seeds 1,2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_grounding import HIT_RADIUS, add_room_arguments, box_distance, room_seeds

from m3_core.data.synthetic import read_objects_json
from m3_core.data.synthetic_rooms import ROOM_FEATURES, write_room
from m3_core.data.transforms import read_transforms_dataset
from m3_core.query import MemoryPredictor
from m3_core.train import FeatureSpec, TrainConfig, Trainer

MIN_PIXELS = 20  # an object counts as seen in a frame from this many instance-mask pixels


def first_half(ds):
    """The dataset's first half of frames (the walk's start), its test views among them."""
    half = len(ds.frames) // 2
    return dataclasses.replace(
        ds, frames=ds.frames[:half], test_indices=[i for i in ds.test_indices if i < half]
    )


def seen_ids(ds) -> set[int]:
    """Instance ids with >= MIN_PIXELS pixels in some training frame of ``ds``."""
    import cv2

    seen: set[int] = set()
    for i in ds.train_indices:
        inst = cv2.imread(str(ds.root / "instances" / f"{ds.frames[i].name}.png"), -1)
        ids, counts = np.unique(inst, return_counts=True)
        seen |= {int(k) for k, c in zip(ids, counts, strict=True) if c >= MIN_PIXELS}
    return seen


def train(ds, out: Path, args, seed: int, incremental: bool = False) -> float:
    """Train (or grow) ``out`` on ``ds`` with the default schedule; returns seconds."""
    w, h = args.width, args.height
    cfg = TrainConfig.sized_for(
        args.device, len(ds.train_indices), w, h, features=[FeatureSpec("labels")],
        device=args.device, seed=seed,
        **({"iterations": args.iterations} if args.iterations else {}),
    )  # fmt: skip
    t0 = time.perf_counter()
    Trainer(ds, cfg, out, incremental=incremental).run()
    return time.perf_counter() - t0


def errors(mem: Path, truth: list[dict]) -> dict[str, tuple[float, float]]:
    """label -> (metres from the top answer to the box, to the box's centre); inf: none."""
    pred = MemoryPredictor.load(mem)
    out = {}
    for o in truth:
        found = pred.ground(o["label"])
        if not found:
            out[o["label"]] = (math.inf, math.inf)
            continue
        c = found[0].center
        out[o["label"]] = (
            box_distance(c, o["center"], o["size"]),
            float(np.linalg.norm(c - np.asarray(o["center"]))),
        )
    return out


def run_room(seed: int, args, work: Path) -> dict:
    root = work / f"{args.setting}_{seed}"
    rng = np.random.default_rng(seed)
    n_objects = int(rng.integers(args.min_objects, args.max_objects + 1))
    if (root / "scene" / "transforms.json").exists():  # --workdir reuse (training resumes)
        ds = read_transforms_dataset(root / "scene" / "transforms.json")
    else:
        ds = write_room(
            root / "scene", frames=args.frames, width=args.width, height=args.height,
            objects=n_objects, seed=seed, features=args.setting,
        )  # fmt: skip
    start = first_half(ds)
    t_first = train(start, root / "grown", args, seed)
    t_grow = train(ds, root / "grown", args, seed, incremental=True)
    t_full = train(ds, root / "full", args, seed)
    truth = read_objects_json(root / "scene")["objects"]
    early = seen_ids(start)
    grown, full = errors(root / "grown", truth), errors(root / "full", truth)
    rows = [
        {"label": o["label"], "new": o["id"] not in early,
         "grown": grown[o["label"]], "full": full[o["label"]]}
        for o in truth
    ]  # fmt: skip
    return {"seed": seed, "rows": rows, "train_s": (t_first, t_grow, t_full)}


def group_stats(rows: list[dict], key: str) -> tuple[int, float, float]:
    hits = sum(r[key][0] <= HIT_RADIUS for r in rows)
    med = [statistics.median(r[key][j] for r in rows) if rows else math.nan for j in (0, 1)]
    return hits, med[0], med[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_room_arguments(p, rooms=3)
    p.add_argument("--setting", default="coarse", choices=sorted(ROOM_FEATURES))
    p.add_argument("--iterations", type=int, default=0, help="0: the default schedule")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    seeds = room_seeds(args)
    print(f"incremental growth: {len(seeds)} rooms ({args.setting}), {args.frames} frames "
          f"{args.width}x{args.height}, first half then all, vs all at once; "
          f"seeds {seeds}")  # fmt: skip
    rooms = []
    with tempfile.TemporaryDirectory(prefix="m3-bench-inc-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        for seed in seeds:
            r = run_room(seed, args, work)
            rooms.append(r)
            t = r["train_s"]
            print(f"room {seed}: {len(r['rows'])} objects, {sum(x['new'] for x in r['rows'])} "
                  f"first seen in the new frames; train s: first half {t[0]:.0f}, growth "
                  f"{t[1]:.0f}, all at once {t[2]:.0f}", flush=True)  # fmt: skip
            for x in r["rows"]:
                print(f"  {x['label']:<16}{'new' if x['new'] else 'old':<5}"
                      f"grown {x['grown'][0]:.2f} / {x['grown'][1]:.2f} m   "
                      f"full {x['full'][0]:.2f} / {x['full'][1]:.2f} m")  # fmt: skip
    rows = [x for r in rooms for x in r["rows"]]
    print(f"\n{'objects':<22}{'n':>4}{'memory':>8}{'hits':>6}{'median m to box':>17}"
          f"{'to centre':>11}")  # fmt: skip
    for name, sel in (("first seen in new", [x for x in rows if x["new"]]),
                      ("seen in first half", [x for x in rows if not x["new"]])):  # fmt: skip
        for key in ("grown", "full"):
            hits, box, ctr = group_stats(sel, key)
            print(f"{name:<22}{len(sel):>4}{key:>8}{hits:>6}{box:>17.3f}{ctr:>11.3f}")
    print(f"target: incremental within 0.1 m of the full training's error; hit = within "
          f"{HIT_RADIUS} m of the true box")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"seeds": seeds, "rooms": rooms}, default=str))


if __name__ == "__main__":
    main()
