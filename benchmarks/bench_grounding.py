"""Benchmark 3D grounding (``MemoryPredictor.ground``): accuracy on random rooms, latency.

Accuracy, on rooms nobody tuned for: each room is a fresh random layout of 6-12 labelled
boxes (``m3_core.data.synthetic_rooms.write_room``; seeds drawn at random unless ``--seeds``
is given, and printed so a run can be repeated), rendered under each feature setting
(``ROOM_FEATURES``):

* ``exact``: per-pixel label features (stride 1, no noise);
* ``coarse``: a patch grid 1/8 of the image with blended borders (average-pooled) and
  per-cell noise N(0, 0.15^2) per channel (cosine to the clean label ~0.85), like a ViT;

then trained with the project's default schedule for the device (``TrainConfig.sized_for``,
what ``m3 train`` does without ``--preset``) and grounded with the default parameters. Per
setting it prints:

* top-1 hit rate: fraction of objects whose best answer's centre lies within 0.3 m of the
  true box (target >= 95 %), and the median distance to the box and to its centre;
* false-answer rate: fraction of absent labels (household names not in the room, added to
  the vocabulary as fresh random label vectors) answered at all (target <= 5 %);
* the paper's 2D metrics on the held-out views (relevancy image -> Otsu mask vs the true
  instance mask, per present object and view): mIoU, cIoU, P@0.5;
* the median ``ground`` latency.

Latency: a synthetic memory of ``--latency-gaussians`` (100k) Gaussians in 40 object clusters,
queried (a) like the labels memory (closed vocabulary, d = 16, 12 labels) and (b) like CLIP
(open vocabulary, d = 768, PSC of 2000 rows, 4 canonical negatives, a stand-in text tower);
reports the one-off cache build and the median of ``ground`` / ``relevancy`` / ``top_points``
over 30 queries (target: ground < 20 ms on CPU).

    python benchmarks/bench_grounding.py [--rooms 10] [--settings exact,coarse] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from m3_core.config import MemoryConfig
from m3_core.data.features import FeatureStore
from m3_core.data.synthetic_rooms import ROOM_FEATURES, write_room
from m3_core.data.transforms import read_transforms_dataset
from m3_core.extractors.base import FeatureExtractor
from m3_core.extractors.registry import register, unregister
from m3_core.memory import Memory
from m3_core.query import DEFAULT_NEGATIVES, MemoryPredictor, TextEncoder
from m3_core.types import ModelSpec

HIT_RADIUS = 0.3  # metres, from the answer's centre to the true box
SETTINGS = ROOM_FEATURES  # name -> make_synthetic_scene feature arguments


def add_absent_labels(mem_dir: Path, labels: list[str], seed: int) -> None:
    """Append fresh random unit vectors for ``labels`` to the memory's label vocabulary."""
    store = FeatureStore(mem_dir, "labels")
    texts, emb = store.vocabulary()
    labels = [lab for lab in labels if lab not in texts]  # a reused memory has them already
    if not labels:
        return
    g = torch.Generator().manual_seed(10_000 + seed)
    new = torch.randn(len(labels), emb.shape[1], generator=g)
    new = new / new.norm(dim=-1, keepdim=True)
    store.save_vocabulary(texts + labels, torch.cat([emb, new]))


def add_room_arguments(
    p: argparse.ArgumentParser,
    *,
    rooms: int,
    frames: int = 60,
    size: tuple[int, int] = (160, 120),
    objects: tuple[int, int] = (6, 12),
    seeds_help: str = "comma-separated room seeds (default: random)",
) -> None:
    """The random-room suite's arguments, shared by the room benchmarks (``room_seeds``
    reads --rooms, --seeds and --threads)."""
    p.add_argument("--rooms", type=int, default=rooms, help="random rooms (per setting)")
    p.add_argument("--seeds", default="", help=seeds_help)
    p.add_argument("--min-objects", type=int, default=objects[0])
    p.add_argument("--max-objects", type=int, default=objects[1])
    p.add_argument("--frames", type=int, default=frames)
    p.add_argument("--width", type=int, default=size[0])
    p.add_argument("--height", type=int, default=size[1])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    p.add_argument("--workdir", default=None, help="keep scenes/memories here (default: tmp)")


def room_seeds(args: argparse.Namespace) -> list[int]:
    """Apply ``--threads``; the room seeds: ``--seeds``, else ``--rooms`` fresh random ones."""
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if not seeds:
        seeds = [int(x) for x in np.random.default_rng().integers(0, 2**31 - 1, args.rooms)]
    return seeds


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn(i)`` over ``repeats`` calls, in ms."""
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def box_distance(p: np.ndarray, center, size) -> float:
    """Distance from point ``p`` [3] to the axis-aligned box (0 inside)."""
    d = np.maximum(np.abs(p - np.asarray(center)) - np.asarray(size) / 2, 0.0)
    return float(np.linalg.norm(d))


def metrics_2d(pred: MemoryPredictor, ds, objects: list[dict]) -> dict:
    """Paper Table 2 metrics on the held-out views: relevancy image vs instance mask."""
    import cv2

    from m3_core.query import grounding_metrics

    heat, masks = [], []
    for i in ds.test_indices:
        frame = ds.frames[i]
        inst = cv2.imread(str(ds.root / "instances" / f"{frame.name}.png"), cv2.IMREAD_UNCHANGED)
        for o in objects:
            gt = inst == o["id"]
            if gt.sum() < 20:  # not (or barely) in this view
                continue
            heat.append(pred.relevancy_image(o["label"], frame.camera))
            masks.append(gt)
    if not heat:
        return {"mIoU": math.nan, "cIoU": math.nan, "P@0.5": math.nan, "P@0.6": math.nan}
    return grounding_metrics(heat, masks).as_percent()


def run_room(setting: str, seed: int, args, work: Path) -> dict:
    from m3_core.data.synthetic import read_objects_json
    from m3_core.data.synthetic_rooms import HOUSEHOLD
    from m3_core.train import FeatureSpec, TrainConfig, Trainer

    rng = np.random.default_rng(seed)
    n_objects = int(rng.integers(args.min_objects, args.max_objects + 1))
    root = work / f"{setting}_{seed}"
    scene_dir, mem_dir = root / "scene", root / "mem"
    t0 = time.perf_counter()
    if (scene_dir / "transforms.json").exists():  # --workdir reuse
        ds = read_transforms_dataset(scene_dir / "transforms.json")
    else:
        ds = write_room(
            scene_dir, frames=args.frames, width=args.width, height=args.height,
            objects=n_objects, seed=seed, features=setting,
        )  # fmt: skip
    n_train = len(ds.train_indices)
    cfg = TrainConfig.sized_for(
        args.device, n_train, args.width, args.height, features=[FeatureSpec("labels")],
        device=args.device, seed=seed,
        **({"iterations": args.iterations} if args.iterations else {}),
    )  # fmt: skip
    # a --workdir memory from an earlier run resumes from its checkpoint (a finished one is
    # only re-saved)
    psnr = Trainer(ds, cfg, mem_dir).run().metrics.get("test_psnr", float("nan"))
    train_s = time.perf_counter() - t0
    truth = read_objects_json(scene_dir)["objects"]
    present = {o["label"] for o in truth}
    absent = [lab for lab in HOUSEHOLD if lab not in present][: args.absent]
    add_absent_labels(mem_dir, absent, seed)
    pred = MemoryPredictor.load(mem_dir, device=args.device)
    pred.prepare()
    rows, hits, box_err, ctr_err = [], 0, [], []
    for o in truth:
        found = pred.ground(o["label"])
        d_box = box_distance(found[0].center, o["center"], o["size"]) if found else math.inf
        d_ctr = float(np.linalg.norm(found[0].center - o["center"])) if found else math.inf
        hits += d_box <= HIT_RADIUS
        box_err.append(d_box)
        ctr_err.append(d_ctr)
        rows.append((o["label"], len(found), d_box))
    false = [lab for lab in absent if pred.ground(lab)]
    labels = [o["label"] for o in truth] + absent
    lat = timed(lambda i: pred.ground(labels[i % len(labels)]), 20)
    m2d = {} if args.skip_2d else metrics_2d(pred, ds, truth)
    return {
        "setting": setting, "seed": seed, "objects": len(truth), "hits": hits,
        "gaussians": pred.memory.num_gaussians, "psnr": psnr, "train_s": train_s,
        "steps": cfg.iterations, "box_err": box_err, "center_err": ctr_err,
        "false": false, "absent": len(absent), "latency_ms": lat, "metrics_2d": m2d,
        "temperature": pred.temperature("labels"), "rows": rows,
    }  # fmt: skip


def summarise(rooms: list[dict]) -> dict:
    """Per-setting totals over rooms."""
    out = {}
    for setting in dict.fromkeys(r["setting"] for r in rooms):
        rs = [r for r in rooms if r["setting"] == setting]
        box = [e for r in rs for e in r["box_err"]]
        ctr = [e for r in rs for e in r["center_err"]]
        m2d = [r["metrics_2d"] for r in rs if r["metrics_2d"]]
        out[setting] = {
            "rooms": len(rs),
            "objects": sum(r["objects"] for r in rs),
            "hit": sum(r["hits"] for r in rs) / max(sum(r["objects"] for r in rs), 1),
            "median_box_err": statistics.median(box),
            "median_center_err": statistics.median(ctr),
            "false": sum(len(r["false"]) for r in rs) / max(sum(r["absent"] for r in rs), 1),
            "latency_ms": statistics.median(r["latency_ms"] for r in rs),
            **{k: statistics.mean(m[k] for m in m2d) for k in ("mIoU", "cIoU", "P@0.5")
               if m2d},
        }  # fmt: skip
    return out


class _StandInTower(FeatureExtractor):
    """Text tower for the open-vocabulary latency case: known texts -> given vectors, any
    other text -> a fixed random vector per text."""

    name, stride, has_text = "bench-open", 1, True

    def __init__(self, dim: int, known: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.dim, self.known, self.device = dim, known, torch.device("cpu")

    def _encode(self, x):  # pragma: no cover - text only
        raise NotImplementedError

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        out = []
        for t in texts:
            g = torch.Generator().manual_seed(sum(map(ord, t)) * 7919 + len(t))
            out.append(self.known.get(t, torch.randn(self.dim, generator=g)))
        return torch.stack(out)


def synthetic_memory(n: int, dim: int, bank_rows: int, clusters: int, seed: int = 0) -> Memory:
    """``n`` Gaussians in ``clusters`` blobs (plus 20 % scattered), random queries per blob."""
    g = torch.Generator().manual_seed(seed)
    s = 16
    centres = (torch.rand(clusters, 3, generator=g) - 0.5) * torch.tensor([6.0, 5.0, 2.0])
    n_bg = n // 5
    which = torch.randint(0, clusters, (n - n_bg,), generator=g)
    means = torch.cat([
        centres[which] + 0.15 * torch.randn(n - n_bg, 3, generator=g),
        (torch.rand(n_bg, 3, generator=g) - 0.5) * torch.tensor([6.0, 5.0, 2.5]),
    ])  # fmt: skip
    cq = torch.randn(clusters + 1, s, generator=g)
    queries = torch.cat([cq[which], cq[-1].expand(n_bg, s)]) + 0.1 * torch.randn(n, s, generator=g)
    cfg = MemoryConfig(models=[ModelSpec("feat", dim, s, 0.8)], sh_degree=0)
    params = {
        "means": means, "scales": torch.full((n, 3), -3.0),
        "quats": torch.tensor([1.0, 0, 0, 0]).repeat(n, 1), "opacities": torch.full((n,), 2.0),
        "sh0": torch.rand(n, 1, 3, generator=g), "shN": torch.zeros(n, 0, 3), "queries": queries,
    }  # fmt: skip
    return Memory.create(cfg, params, {"feat": torch.randn(bank_rows, dim, generator=g)})


def run_latency(n: int, closed: bool) -> dict:
    """Cache build and per-query times on a synthetic ``n``-Gaussian memory (module doc)."""
    dim, rows = (16, 12) if closed else (768, 2000)
    mem = synthetic_memory(n, dim, rows, clusters=40)
    if closed:  # labels = the bank rows, as for the synthetic "labels" features
        texts = [f"label{i}" for i in range(12)]
        enc = TextEncoder(vocabularies={"feat": (texts, mem.banks["feat"])})
    else:  # each query text = the decoded feature of one Gaussian (selects its cluster)
        from m3_core.query import decode_gaussian_features

        feats = decode_gaussian_features(mem, "feat")
        texts = [f"query {i}" for i in range(30)]
        known = {t: feats[i * 997 % n] for i, t in enumerate(texts)}
        generic = feats.mean(0) / feats.mean(0).norm()  # like CLIP's "object": near everything
        known.update({t: generic for t in DEFAULT_NEGATIVES})
        register("bench-open", lambda *, weights, device, **kw: _StandInTower(dim, known))
        enc = TextEncoder(metas={"feat": {"model": "bench-open", "has_text": True}})
        enc.embed("feat", texts)  # text embedding is not what is timed
    pred = MemoryPredictor(mem, enc)
    t = time.perf_counter()
    pred.prepare(["feat"])
    build_s = time.perf_counter() - t
    result = {
        "case": f"{'closed' if closed else 'open'} d={dim}",
        "gaussians": n,
        "cache_build_s": build_s,
        "ground_ms": timed(lambda i: pred.ground(texts[i % len(texts)]), 30),
        "relevancy_ms": timed(lambda i: pred.relevancy(texts[i % len(texts)]), 30),
        "top_points_ms": timed(lambda i: pred.top_points(texts[i % len(texts)], k=10), 30),
        "objects_per_query": [len(pred.ground(t)) for t in texts[:5]],
    }
    unregister("bench-open")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_room_arguments(p, rooms=10)
    p.add_argument("--settings", default="exact,coarse", help=f"of {', '.join(SETTINGS)}")
    p.add_argument("--absent", type=int, default=6, help="absent labels queried per room")
    p.add_argument("--iterations", type=int, default=0, help="0: the default schedule")
    p.add_argument("--latency-gaussians", type=int, default=100_000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-train", action="store_true", help="latency only")
    p.add_argument("--skip-latency", action="store_true", help="accuracy only")
    p.add_argument("--skip-2d", action="store_true", help="no 2D metrics (faster)")
    p.add_argument("--quick", action="store_true", help="2 rooms, 24 frames, 10k Gaussians")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    if args.quick:
        args.rooms, args.frames, args.latency_gaussians = 2, 24, 10_000
    seeds = room_seeds(args)
    results: dict = {"rooms": [], "latency": [], "seeds": seeds}

    if not args.skip_latency:
        print(
            f"latency, {args.latency_gaussians} Gaussians, CPU threads {torch.get_num_threads()}"
        )
        print(f"{'case':<14}{'cache build s':>14}{'ground ms':>11}{'relevancy ms':>14}"
              f"{'top_points ms':>15}  objects/query")  # fmt: skip
        for closed in (True, False):
            r = run_latency(args.latency_gaussians, closed)
            results["latency"].append(r)
            print(f"{r['case']:<14}{r['cache_build_s']:>14.2f}{r['ground_ms']:>11.2f}"
                  f"{r['relevancy_ms']:>14.2f}{r['top_points_ms']:>15.2f}"
                  f"  {r['objects_per_query']}")  # fmt: skip

    if not args.skip_train:
        with tempfile.TemporaryDirectory(prefix="m3-bench-ground-") as tmp:
            work = Path(args.workdir) if args.workdir else Path(tmp)
            print(f"\naccuracy: {len(seeds)} random rooms x settings {args.settings}, "
                  f"{args.frames} frames {args.width}x{args.height}, default schedule, "
                  f"hit = within {HIT_RADIUS} m of the true box; seeds {seeds}")  # fmt: skip
            print(
                f"{'room':<22}{'obj':>4}{'N':>7}{'steps':>6}{'PSNR':>6}{'T':>6}{'train s':>8}"
                f"{'hit':>6}{'false':>6}{'mIoU':>6}{'ms':>6}  misses (label: m to box)"
            )
            for setting in args.settings.split(","):
                for seed in seeds:
                    r = run_room(setting, seed, args, work)
                    results["rooms"].append(r)
                    miss = ", ".join(f"{lab}: {e:.2f}" for lab, _, e in r["rows"]
                                     if e > HIT_RADIUS)  # fmt: skip
                    m = r["metrics_2d"].get("mIoU", math.nan)
                    print(f"{setting + '/' + str(seed):<22}{r['objects']:>4}{r['gaussians']:>7}"
                          f"{r['steps']:>6}{r['psnr']:>6.1f}{r['temperature']:>6.3f}"
                          f"{r['train_s']:>8.0f}{r['hits']:>3}/{r['objects']:<2}"
                          f"{len(r['false']):>3}/{r['absent']:<2}{m:>6.1f}"
                          f"{r['latency_ms']:>6.1f}  {miss}", flush=True)  # fmt: skip
                    if args.json:
                        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
            results["summary"] = summarise(results["rooms"])
            print(f"\n{'setting':<10}{'rooms':>6}{'objects':>8}{'top-1 hit %':>12}"
                  f"{'median m to box / centre':>26}{'false %':>9}{'mIoU':>7}{'cIoU':>7}"
                  f"{'P@0.5':>7}{'ground ms':>10}")  # fmt: skip
            for setting, t in results["summary"].items():
                print(f"{setting:<10}{t['rooms']:>6}{t['objects']:>8}{100 * t['hit']:>12.1f}"
                      f"{t['median_box_err']:>15.3f} / {t['median_center_err']:<8.3f}"
                      f"{100 * t['false']:>9.1f}{t.get('mIoU', math.nan):>7.1f}"
                      f"{t.get('cIoU', math.nan):>7.1f}{t.get('P@0.5', math.nan):>7.1f}"
                      f"{t['latency_ms']:>10.1f}")  # fmt: skip
            print("targets: top-1 hit >= 95 %, false <= 5 %, on both settings, with defaults")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
