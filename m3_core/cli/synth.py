"""``m3 synth OUT``: a synthetic RGB-D room dataset to try the pipeline without a robot."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from m3_core.io import first_missing_folder, writable_folder_above

MAX_SIDE = 4096  # pixels; larger images are refused before any work

DESCRIPTION = (
    "Render a random furnished room (a 6 x 5 x 2.5 m room, world z up, with --objects "
    "labelled boxes; the camera walks a loop at 0.5 m height) into OUT as a nerfstudio "
    "dataset: transforms.json, images/, depth/, sparse_pc.ply, per-pixel instance ids "
    "(instances/), the true boxes (objects.json), and precomputed label features "
    "(features/labels/ with vocabulary.npz, so text queries work). --features exact gives "
    "per-pixel label vectors; coarse a noisy 1/8 patch grid like a ViT's. The seed fixes "
    "every byte. Then: m3 train OUT --out MEM --features labels"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from m3_core.data.synthetic_rooms import HOUSEHOLD, ROOM_FEATURES

    p.add_argument("out", help="dataset folder to create (must be new or empty)")
    p.add_argument("--frames", type=int, default=60, help="camera frames to render (60)")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(160, 120),
        metavar=("W", "H"),
        help="image size (160 120)",
    )
    p.add_argument(
        "--objects",
        type=int,
        default=8,
        help=f"labelled boxes in the room, 1..{len(HOUSEHOLD)} (8)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="fixes the room, the views and the noise (0)"
    )
    kinds = " | ".join(ROOM_FEATURES)
    p.add_argument("--features", default="coarse", help=f"label feature kind: {kinds} (coarse)")


def check_args(args: argparse.Namespace) -> Path:
    """The output folder; InvalidInputError for sizes, counts or an output we cannot use."""
    from m3_core.data.synthetic_rooms import ROOM_FEATURES
    from m3_core.errors import InvalidInputError

    if args.features not in ROOM_FEATURES:
        kinds = " or ".join(ROOM_FEATURES)
        raise InvalidInputError(f"--features must be {kinds}, got {args.features!r}")
    w, h = args.size
    if not (8 <= w <= MAX_SIDE and 8 <= h <= MAX_SIDE):
        raise InvalidInputError(f"--size must be 8..{MAX_SIDE} pixels a side, got {w} {h}")
    if args.frames < 1:
        raise InvalidInputError(f"--frames must be >= 1, got {args.frames}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise InvalidInputError(f"{out} is not empty; pick a new or empty folder")
    writable_folder_above(out, f"cannot create {out}")
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from m3_core.data.synthetic import read_objects_json
    from m3_core.data.synthetic_rooms import random_objects, write_room

    out = check_args(args)
    random_objects(args.objects, args.seed)  # refuse a room that does not fit before writing
    created = first_missing_folder(out)  # the outermost folder this run creates, or None
    bar = tqdm(total=args.frames, desc="rendering", unit="frame", file=sys.stderr)
    try:
        ds = write_room(
            out,
            frames=args.frames,
            width=args.size[0],
            height=args.size[1],
            objects=args.objects,
            seed=args.seed,
            features=args.features,
            on_frame=lambda done, total: bar.update(done - bar.n),
        )
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        else:  # an empty folder given by the user: empty it again
            for child in out.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    finally:
        bar.close()
    summary = {
        "dataset": str(out),
        "frames": len(ds.frames),
        "train_frames": len(ds.train_indices),
        "test_frames": len(ds.test_indices),
        "objects": [o["label"] for o in read_objects_json(out)["objects"]],
        "features": "labels",
    }
    print(json.dumps(summary))
    print(f"m3 synth: next: m3 train {out} --out MEM --features labels", file=sys.stderr)
    return 0
