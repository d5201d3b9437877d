"""CPU (or GPU) training of a small scene: time per step, and the memory's quality.

Default: the training step before and after issue 18's fast paths, in one run on the same scene
("before" = ``TrainConfig(fast_step=False)``: two render passes, torch projection and binning,
torchmetrics SSIM, per-tensor Adam, the hand-written bilinear sampler; "after" = the default).
Target (issue 18): <= 95 ms CPU per step with the small preset, test PSNR within 0.2 dB and
feature 1 - cos within 10 % of "before". Other variants measure the design choices M3 leaves
open: a frozen projection W_m (released M3) and letting the feature loss move the geometry.

"cpu ms/step" is the process CPU time (all threads) of the training loop alone, from the first
to the last step's progress report: on a shared machine a steadier figure than wall time.
"wall s" is the whole run (loading, PSC, training, saving). Prints a table; ``--json`` saves it.

    python benchmarks/bench_training.py [--frames 60] [--iterations N] [--device auto]
        [--variants before,after,frozen_projection,feature_moves_geometry]
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
    "before": {"fast_step": False},
    "after": {},
    "frozen_projection": {"train_projection": False},
    "feature_moves_geometry": {"detach_query_geometry": False},
}


class LoopClock:
    """Progress callback: process CPU and wall time between the first and last training step."""

    def __init__(self) -> None:
        self.first: tuple[int, float, float] | None = None
        self.last: tuple[int, float, float] | None = None

    def __call__(self, p) -> None:
        if p.stage == "training":
            now = (p.step, time.process_time(), time.perf_counter())
            self.first = self.first or now
            self.last = now

    def per_step_ms(self) -> tuple[float, float]:
        """(CPU ms, wall ms) per step over steps 2..n."""
        if self.first is None or self.last is None or self.last[0] == self.first[0]:
            return float("nan"), float("nan")
        n = self.last[0] - self.first[0]
        return tuple(1000 * (b - a) / n for a, b in zip(self.first[1:], self.last[1:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--iterations", type=int, default=None, help="default: the small preset's")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default="before,after")
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
        clock = LoopClock()
        t0 = time.perf_counter()
        res = Trainer(ds, cfg, out, on_progress=clock).run()
        wall = time.perf_counter() - t0
        cpu_ms, wall_ms = clock.per_step_ms()
        m = evaluate(res.memory, ds, ds.test_indices)
        f = m["features"]["labels"]
        rows.append(
            {
                "variant": name,
                "iterations": cfg.iterations,
                "cpu_ms_per_step": round(cpu_ms, 1),
                "wall_ms_per_step": round(wall_ms, 1),
                "wall_s": round(wall, 1),
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
    by = {r["variant"]: r for r in rows}
    if "before" in by and "after" in by:
        b, a = by["before"], by["after"]
        print(
            f"after vs before: {b['cpu_ms_per_step'] / a['cpu_ms_per_step']:.2f}x CPU per step, "
            f"PSNR {a['test_psnr'] - b['test_psnr']:+.2f} dB, "
            f"1-cos {100 * (a['cos_dist'] / b['cos_dist'] - 1):+.1f} %"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
