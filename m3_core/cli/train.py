"""``m3 train DATA --out MEM``: fit a memory; Ctrl-C saves a checkpoint, re-running resumes."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="dataset folder (nerfstudio transforms.json or COLMAP)")
    p.add_argument("--out", required=True, help="memory folder to write (resumes if present)")
    p.add_argument(
        "--features",
        default="",
        help="comma-separated feature folders to distil: name[:channels[:threshold]]",
    )
    p.add_argument("--iterations", type=int, default=None, help="training steps")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--preset",
        choices=("paper", "small"),
        default="paper",
        help="paper: the 30k-step M3 schedule; small: a few-minute CPU schedule",
    )
    p.add_argument("--max-size", default=None, help="cap image size, e.g. 640x480")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--incremental",
        action="store_true",
        help="grow the memory in --out with the dataset's new frames",
    )
    p.add_argument(
        "--weights-dir", default=None, help="local weights folder for extracting missing features"
    )


def run(args: argparse.Namespace) -> int:
    from m3_core.cli.progress import TrainBar, stop_on_sigint
    from m3_core.errors import InvalidInputError
    from m3_core.train import FeatureSpec, TrainConfig
    from m3_core.train.pipeline import train_memory

    feats = [FeatureSpec.parse(f) for f in args.features.split(",") if f.strip()]
    overrides: dict = {"features": feats, "device": args.device, "seed": args.seed}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.max_size:
        try:
            w, h = (int(v) for v in args.max_size.lower().split("x"))
        except ValueError:
            raise InvalidInputError(
                f"--max-size must look like 640x480, got {args.max_size!r}"
            ) from None
        overrides["max_image_size"] = (w, h)
    cfg = (
        TrainConfig.small_scene(**overrides)
        if args.preset == "small"
        else TrainConfig(**overrides)
    )
    bar = TrainBar()
    with stop_on_sigint() as should_stop:
        try:
            result = train_memory(
                args.data,
                cfg,
                args.out,
                bar,
                should_stop,
                weights_dir=args.weights_dir,
                incremental=args.incremental,
            )
        finally:
            bar.close()
    summary = {
        "memory": str(result.out_dir),
        "step": result.step,
        "cancelled": result.cancelled,
        "num_gaussians": result.memory.num_gaussians,
        **result.metrics,
    }
    print(json.dumps(summary))
    if result.cancelled:
        print(
            f"m3 train: interrupted at step {result.step}; run the same command to resume",
            file=__import__("sys").stderr,
        )
        return 130
    return 0
