"""Benchmark 3D grounding (``MemoryPredictor.ground``): accuracy on synthetic scenes, latency.

Accuracy: for each scene (a layout of labelled boxes rendered by
``m3_core.data.synthetic.make_synthetic_scene``, one seed each), a memory is trained with the
project's ``Trainer`` on the scene's per-pixel "labels" features (``TrainConfig.small_scene``),
then every object label is grounded and the scene reports

* hit rate: fraction of present objects whose *top* answer's centre lies within 0.3 m of the
  true box centre (target >= 95 %);
* false-answer rate: fraction of absent labels (the other layout's objects and a few extras,
  added to the memory's vocabulary as fresh random label vectors, like the scene's own) that
  get any answer at all (target <= 5 %);
* the median query latency on that memory after caching.

Latency: a synthetic memory of ``--latency-gaussians`` (100k) Gaussians in 40 object clusters,
queried (a) like the labels memory (closed vocabulary, d = 16, 12 labels) and (b) like CLIP
(open vocabulary, d = 768, PSC of 2000 rows, 4 canonical negatives, a stand-in text tower);
reports the one-off cache build and the median of ``ground`` / ``relevancy`` / ``top_points``
over 30 queries (target: ground < 20 ms on CPU).

    python benchmarks/bench_grounding.py [--iterations 1500] [--quick] [--workdir DIR]
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
from m3_core.data.synthetic import SyntheticObject, default_objects, make_synthetic_scene
from m3_core.data.transforms import read_transforms_dataset
from m3_core.extractors.base import FeatureExtractor
from m3_core.extractors.registry import register, unregister
from m3_core.memory import Memory
from m3_core.query import DEFAULT_NEGATIVES, MemoryPredictor, TextEncoder
from m3_core.types import ModelSpec

HIT_RADIUS = 0.3  # metres
EXTRA_ABSENT = ["bicycle", "fridge", "piano", "guitar"]


def alt_objects() -> list[SyntheticObject]:
    """A second layout: other labels, sizes and places (clear of the camera loop)."""
    return [
        SyntheticObject("bed", (-2.0, 1.5, 0.3), (1.6, 1.0, 0.6), (0.7, 0.7, 0.9), "stripes"),
        SyntheticObject("lamp", (2.5, 1.9, 0.7), (0.3, 0.3, 1.4), (0.95, 0.9, 0.3), "dots"),
        SyntheticObject("tv", (0.3, -2.3, 0.8), (1.2, 0.2, 0.7), (0.1, 0.1, 0.1), "checker"),
        SyntheticObject("desk", (2.2, -1.6, 0.38), (1.0, 0.6, 0.76), (0.55, 0.35, 0.2)),
        SyntheticObject("cabinet", (-2.4, -1.6, 0.5), (0.5, 0.8, 1.0), (0.3, 0.6, 0.6), "dots"),
    ]


LAYOUTS = {"default": default_objects, "alt": alt_objects}


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


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn(i)`` over ``repeats`` calls, in ms."""
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def run_scene(layout: str, seed: int, args, work: Path) -> dict:
    from m3_core.train import FeatureSpec, TrainConfig, Trainer

    objects = LAYOUTS[layout]()
    scene_dir, mem_dir = work / f"{layout}_{seed}" / "scene", work / f"{layout}_{seed}" / "mem"
    t0 = time.perf_counter()
    if (scene_dir / "transforms.json").exists():  # --workdir reuse: the trainer resumes too
        ds = read_transforms_dataset(scene_dir / "transforms.json")
    else:
        ds = make_synthetic_scene(
            scene_dir, num_frames=args.frames, width=args.width, height=args.height,
            objects=objects, seed=seed,
        )  # fmt: skip
    cfg = TrainConfig.small_scene(
        features=[FeatureSpec("labels")], iterations=args.iterations, device=args.device,
        seed=seed, save_every=0,
    )  # fmt: skip
    if (mem_dir / "memory.json").exists():  # --workdir reuse: evaluate the memory as it is
        psnr = float("nan")
    else:
        psnr = Trainer(ds, cfg, mem_dir).run().metrics.get("test_psnr", float("nan"))
    train_s = time.perf_counter() - t0
    present = {o.label for o in objects}
    absent = sorted({o.label for lay in LAYOUTS.values() for o in lay()} - present)
    absent += EXTRA_ABSENT
    add_absent_labels(mem_dir, absent, seed)
    pred = MemoryPredictor.load(mem_dir, device=args.device)
    pred.prepare()
    rows, hits = [], 0
    for o in objects:
        found = pred.ground(o.label)
        err = float(np.linalg.norm(found[0].center - np.array(o.center))) if found else math.inf
        hits += err <= HIT_RADIUS
        rows.append((o.label, len(found), err, found[0].score if found else float("nan")))
    false = [lab for lab in absent if pred.ground(lab)]
    labels = [o.label for o in objects] + absent
    lat = timed(lambda i: pred.ground(labels[i % len(labels)]), 30)
    return {
        "scene": f"{layout}/seed{seed}",
        "gaussians": pred.memory.num_gaussians,
        "psnr": psnr,
        "train_s": train_s,
        "hit_rate": hits / len(objects),
        "false_rate": len(false) / len(absent),
        "false_labels": false,
        "latency_ms": lat,
        "objects": rows,
    }


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
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--scenes", default="default:0,alt:1", help="layout:seed,...")
    p.add_argument("--latency-gaussians", type=int, default=100_000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--skip-train", action="store_true", help="latency only")
    p.add_argument("--skip-latency", action="store_true", help="accuracy only")
    p.add_argument("--quick", action="store_true", help="300 iterations, 10k Gaussians")
    p.add_argument("--workdir", default=None, help="keep scenes/memories here (default: tmp)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    if args.quick:
        args.iterations, args.latency_gaussians = 300, 10_000
    torch.set_num_threads(args.threads)
    results: dict = {"scenes": [], "latency": []}

    print(f"latency, {args.latency_gaussians} Gaussians, CPU threads {torch.get_num_threads()}")
    print(f"{'case':<14}{'cache build s':>14}{'ground ms':>11}{'relevancy ms':>14}"
          f"{'top_points ms':>15}  objects/query")  # fmt: skip
    for closed in () if args.skip_latency else (True, False):
        r = run_latency(args.latency_gaussians, closed)
        results["latency"].append(r)
        print(f"{r['case']:<14}{r['cache_build_s']:>14.2f}{r['ground_ms']:>11.2f}"
              f"{r['relevancy_ms']:>14.2f}{r['top_points_ms']:>15.2f}"
              f"  {r['objects_per_query']}")  # fmt: skip

    if not args.skip_train:
        with tempfile.TemporaryDirectory(prefix="m3-bench-ground-") as tmp:
            work = Path(args.workdir) if args.workdir else Path(tmp)
            print(f"\naccuracy, {args.iterations} iterations, {args.frames} frames "
                  f"{args.width}x{args.height}, hit radius {HIT_RADIUS} m")  # fmt: skip
            print(f"{'scene':<16}{'N':>8}{'PSNR':>7}{'train s':>9}{'hit %':>8}{'false %':>9}"
                  f"{'query ms':>10}  per object: label (answers, centre error m)")  # fmt: skip
            for item in args.scenes.split(","):
                layout, seed = item.split(":")
                r = run_scene(layout, int(seed), args, work)
                results["scenes"].append(r)
                per = ", ".join(f"{lab} ({n}, {e:.2f})" for lab, n, e, _ in r["objects"])
                print(f"{r['scene']:<16}{r['gaussians']:>8}{r['psnr']:>7.2f}{r['train_s']:>9.0f}"
                      f"{100 * r['hit_rate']:>8.1f}{100 * r['false_rate']:>9.1f}"
                      f"{r['latency_ms']:>10.2f}  {per}")  # fmt: skip
                if r["false_labels"]:
                    print(f"{'':<16}false answers for: {', '.join(r['false_labels'])}")
            scenes = results["scenes"]
            hit = statistics.mean(s["hit_rate"] for s in scenes)
            false = statistics.mean(s["false_rate"] for s in scenes)
            print(
                f"{'mean':<16}{'':>33}{100 * hit:>8.1f}{100 * false:>9.1f}"
                "   (targets: hit >= 95 %, false <= 5 %)"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
