"""CPU (or GPU) training of a small scene: time to a usable memory, and its quality.

Target (issue 4): a 60-frame 160x120 scene to a usable memory in under 5 minutes on 2 CPU
cores. Also measures the design choices M3 leaves open: a trainable projection W_m (released
M3 keeps it frozen at N(0, 1)) and whether the feature loss may move the geometry
(``detach_query_geometry``). Prints a table; ``--json`` saves the rows.

    python benchmarks/bench_training.py [--frames 60] [--iterations N] [--device auto]
        [--variants default,train_projection,feature_moves_geometry]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import m3_core  # noqa: F401  (sets OMP_WAIT_POLICY before torch)
from m3_core.data import load_dataset, make_synthetic_scene
from m3_core.train import FeatureSpec, TrainConfig, Trainer
from m3_core.train.evaluate import evaluate

VARIANTS = {
    "default": {},
    "train_projection": {"train_projection": True},
    "feature_moves_geometry": {"detach_query_geometry": False},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--iterations", type=int, default=None, help="default: the small preset's")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default="default,train_projection")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, help="save the rows here")
    args = p.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="m3-bench-train-"))
    scene = work / "scene"
    if not (scene / "transforms.json").exists():
        make_synthetic_scene(scene, num_frames=args.frames, width=args.width, height=args.height)
    ds = load_dataset(scene)
    rows = []
    for name in args.variants.split(","):
        cfg = TrainConfig.small_scene(
            features=[FeatureSpec("labels")],
            device=args.device,
            save_every=0,
            **VARIANTS[name],
            **({} if args.iterations is None else {"iterations": args.iterations}),
        )
        out = work / f"mem_{name}"
        shutil.rmtree(out, ignore_errors=True)  # a kept folder would resume, not retrain
        t0 = time.perf_counter()
        res = Trainer(ds, cfg, out).run()
        wall = time.perf_counter() - t0
        m = evaluate(res.memory, ds, ds.test_indices)
        f = m["features"]["labels"]
        rows.append(
            {
                "variant": name,
                "iterations": cfg.iterations,
                "wall_s": round(wall, 1),
                "ms_per_step": round(1000 * wall / max(cfg.iterations, 1), 1),
                "gaussians": res.memory.num_gaussians,
                "test_psnr": round(m["psnr"], 2),
                "test_ssim": round(m["ssim"], 3),
                "cos_dist": round(f["cos_dist"], 4),
                "mse": round(f["mse"], 5),
                "device": str(res.memory.device),
            }
        )
        print(rows[-1], flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"\nscene: {args.frames} frames {args.width}x{args.height}, work dir {work}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
