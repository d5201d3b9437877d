"""``m3 extract DATA --model NAME``: foundation-model features in the precomputed format.

Writes ``DATA/features/<name>/<image stem>.npy`` (float16 [h, w, D]), ``meta.json`` (model,
dim, preprocessing, weights source) and, for models with a fixed vocabulary (effnet's 1000
ImageNet classes), ``vocabulary.npz``. Frames whose map exists are skipped, so an interrupted
run resumes; every file is written atomically. ``m3 extract --list`` prints the registered
extractor names, one per line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", help="dataset folder (nerfstudio transforms.json or COLMAP)")
    p.add_argument("--list", action="store_true", help="print the extractor names and exit")
    p.add_argument("--model", help="extractor name (see --list), e.g. effnet, clip, dinov2")
    p.add_argument(
        "--weights",
        default=None,
        help="local weights: file or folder (default: $M3_WEIGHTS_DIR/<model>, "
        "then the model's offline cache); nothing is downloaded",
    )
    p.add_argument("--name", default=None, help="feature folder name (default: the model name)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--stride", type=int, default=None, help="feature stride (effnet: 16 or 32)")
    p.add_argument(
        "--short-side",
        type=int,
        default=None,
        help="network input short side in pixels (default: the model's)",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builder option, e.g. --opt arch=ViT-L-14-336 --opt tag=openai",
    )
    p.add_argument("--overwrite", action="store_true", help="recompute frames already done")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from m3_core.errors import InvalidInputError

    kw: dict[str, Any] = {}
    for item in args.opt:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--opt must look like KEY=VALUE, got {item!r}")
        kw[key.strip().replace("-", "_")] = int(value) if value.strip().isdigit() else value
    if args.stride is not None:
        kw["stride"] = args.stride
    if args.short_side is not None:
        kw["short_side"] = args.short_side
    return kw


def run(args: argparse.Namespace) -> int:
    from m3_core.errors import InvalidInputError
    from m3_core.extractors import list_extractors

    if args.list:
        print("\n".join(list_extractors()))
        return 0
    if not args.data or not args.model:
        raise InvalidInputError("give a dataset and --model NAME (or --list)")

    from tqdm import tqdm

    from m3_core.data import load_dataset
    from m3_core.extractors.extract import extract_features, missing_frames

    dataset = load_dataset(args.data)
    todo = (
        len(dataset.frames)
        if args.overwrite
        else len(missing_frames(dataset, args.name or args.model))
    )
    with tqdm(
        total=todo,
        desc=f"extract {args.name or args.model}",
        unit="frame",
        dynamic_ncols=True,
        file=sys.stderr,
    ) as bar:
        summary = extract_features(
            dataset,
            args.model,
            weights=args.weights,
            device=args.device,
            name=args.name,
            batch_size=args.batch_size,
            options=_options(args),
            overwrite=args.overwrite,
            on_progress=lambda done, total: bar.update(done - bar.n),
        )
    grid = f" of {summary['grid']} x {summary['dim']}" if summary["grid"] else ""
    print(
        f"{summary['dir']}: wrote {summary['written']} maps{grid}, "
        f"skipped {summary['skipped']} already done"
    )
    return 0
