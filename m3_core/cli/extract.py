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

MATCH_KEYS = ("model", "dim", "stride", "preprocess", "source", "backend")


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


def _batches(sizes: list[tuple[int, int]], todo: list[int], batch: int) -> list[list[int]]:
    """Consecutive frames of equal image size, at most ``batch`` per group."""
    groups: list[list[int]] = []
    for i in todo:
        if groups and len(groups[-1]) < batch and sizes[groups[-1][0]] == sizes[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def run(args: argparse.Namespace) -> int:
    from m3_core.errors import InvalidInputError, M3Error
    from m3_core.extractors import create_extractor, list_extractors

    if args.list:
        print("\n".join(list_extractors()))
        return 0
    if not args.data or not args.model:
        raise InvalidInputError("give a dataset and --model NAME (or --list)")
    if args.model == "precomputed":
        raise M3Error(
            "'precomputed' features are read, not computed: put <stem>.npy maps in "
            "DATA/features/<name>/ (see the README)"
        )
    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be >= 1, got {args.batch_size}")

    import torch
    from tqdm import tqdm

    from m3_core.data import FeatureStore, load_dataset

    dataset = load_dataset(args.data)
    kw = _options(args)
    extractor = create_extractor(args.model, weights=args.weights, device=args.device, **kw)
    store = FeatureStore(dataset.root, args.name or extractor.name)
    meta = {**extractor.meta(), "options": {k: str(v) for k, v in sorted(kw.items())}}
    old = store.meta()
    if old is not None and not args.overwrite and store.stems():
        diff = [k for k in MATCH_KEYS if old.get(k) != meta.get(k)]
        if diff:
            raise M3Error(
                f"{store.dir} holds features made with other settings ({', '.join(diff)} "
                "differ): pass --overwrite to recompute them, or --name to write elsewhere"
            )
    store.save_meta(meta)
    vocab = extractor.vocabulary()
    if vocab and (args.overwrite or store.vocabulary() is None):
        store.save_vocabulary(vocab, extractor.encode_text(vocab).cpu())
    elif not vocab and args.overwrite:
        (store.dir / "vocabulary.npz").unlink(missing_ok=True)  # stale: another model's

    names = [f.name for f in dataset.frames]
    todo = [i for i, n in enumerate(names) if args.overwrite or not store.exists(n)]
    skipped = len(names) - len(todo)
    sizes = [(f.camera.height, f.camera.width) for f in dataset.frames]
    grid = None
    with tqdm(
        total=len(todo),
        desc=f"extract {store.name}",
        unit="frame",
        dynamic_ncols=True,
        file=sys.stderr,
    ) as bar:
        for group in _batches(sizes, todo, args.batch_size):
            images = torch.stack([dataset.load_image(i) for i in group]).permute(0, 3, 1, 2)
            feats = extractor.encode_image(images)  # [B, D, h, w]
            maps = feats.permute(0, 2, 3, 1).to(torch.float16).cpu().numpy()  # [B, h, w, D]
            for i, m in zip(group, maps, strict=True):
                store.save(names[i], m)
            grid = maps.shape[1:3]
            bar.update(len(group))
    print(
        f"{store.dir}: wrote {len(todo)} maps"
        + (f" of {tuple(grid)} x {extractor.dim}" if grid else "")
        + f", skipped {skipped} already done"
    )
    return 0
