"""``m3 train DATA --out MEM``: fit a memory; Ctrl-C saves a checkpoint, re-running resumes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from m3_core.io import writable_folder_above


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
        choices=("auto", "paper", "small"),
        default="auto",
        help="auto: sized to the device and the dataset (printed, saved in train_config.json); "
        "paper: the 30k-step M3 schedule; small: a few-minute CPU schedule",
    )
    p.add_argument("--max-size", default=None, help="cap image size, e.g. 640x480")
    p.add_argument(
        "--views-per-step",
        type=int,
        default=None,
        help="training views per step, their loss averaged (default 1; under torchrun: one "
        "per process); split over torchrun's processes",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--incremental",
        action="store_true",
        help="grow the memory in --out with the dataset's new frames",
    )
    p.add_argument(
        "--weights-dir", default=None, help="local weights folder for extracting missing features"
    )


def check_spec(spec):
    """Refuse query channels <= 0 or a PSC threshold outside (0, 1] before any work."""
    from m3_core.errors import InvalidInputError

    ch, th = spec.query_channels, spec.psc_threshold
    if ch is not None and ch <= 0:
        raise InvalidInputError(f"feature {spec.name!r}: query channels must be > 0, got {ch}")
    if th is not None and not 0.0 < th <= 1.0:
        raise InvalidInputError(
            f"feature {spec.name!r}: PSC threshold must be in (0, 1], got {th}"
        )
    return spec


def check_out_folder(path: str) -> None:
    """Refuse an output that is a file, lies below a file, or in a folder we cannot write."""
    from m3_core.errors import InvalidInputError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InvalidInputError(f"--out {path} exists and is not a folder")
    writable_folder_above(p, f"--out {path}")


def run(args: argparse.Namespace) -> int:
    from m3_core.cli.progress import TrainBar, stop_on_sigint
    from m3_core.errors import InvalidInputError
    from m3_core.train import FeatureSpec, TrainConfig
    from m3_core.train.pipeline import train_memory

    feats = [check_spec(FeatureSpec.parse(f)) for f in args.features.split(",") if f.strip()]
    check_out_folder(args.out)
    overrides: dict = {"features": feats, "device": args.device, "seed": args.seed}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun: data-parallel over views
    if args.views_per_step is not None or world > 1:
        overrides["views_per_step"] = args.views_per_step or world
    if args.max_size:
        try:
            w, h = (int(v) for v in args.max_size.lower().split("x"))
        except ValueError:
            raise InvalidInputError(
                f"--max-size must look like 640x480, got {args.max_size!r}"
            ) from None
        overrides["max_image_size"] = (w, h)
    if args.preset == "auto":
        cfg = overrides  # sized once the dataset is loaded (train_memory)
    else:
        overrides["preset"] = args.preset
        make = TrainConfig.small_scene if args.preset == "small" else TrainConfig
        cfg = make(**overrides)
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
                on_config=lambda c: print(f"m3 train: {c.preset}", file=sys.stderr),
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
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    if result.cancelled:
        print(
            f"m3 train: interrupted at step {result.step}; run the same command to resume",
            file=sys.stderr,
        )
        return 130
    return 0
