"""``m3 eval MEM DATA [--json]``: PSNR/SSIM and feature distances on the test views."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("memory", help="memory folder")
    p.add_argument("data", help="dataset folder the memory was trained on")
    p.add_argument("--split", choices=("test", "train", "all"), default="test")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from m3_core.data import load_dataset
    from m3_core.memory import Memory
    from m3_core.train import resolve_device
    from m3_core.train.evaluate import evaluate

    memory = Memory.load(args.memory, resolve_device(args.device))
    dataset = load_dataset(args.data)
    ids = {
        "test": list(dataset.test_indices),
        "train": list(dataset.train_indices),
        "all": list(range(len(dataset.frames))),
    }[args.split]
    metrics = {"split": args.split, **evaluate(memory, dataset, ids)}
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(f"{args.split} views: {metrics['frames']}")
    if metrics["frames"]:
        print(f"PSNR {metrics['psnr']:.2f} dB   SSIM {metrics['ssim']:.4f}")
    for name, m in metrics["features"].items():
        print(f"{name:>12}: 1-cos {m['cos_dist']:.4f}   MSE {m['mse']:.5f}")
    return 0
