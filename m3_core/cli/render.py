"""``m3 render MEM (--frame I --data DATA | --pose ... --intrinsics ...) --out FILE.npz``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from m3_core.io import writable_folder_above


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("memory", help="memory folder")
    p.add_argument("--frame", type=int, help="frame index of --data to render from")
    p.add_argument("--data", help="dataset folder (with --frame)")
    p.add_argument("--pose", help='camera optical-frame pose in the world: "x y z qx qy qz qw"')
    p.add_argument("--intrinsics", help='"fx fy cx cy w h" in pixels')
    p.add_argument("--features", default="", help="comma-separated feature names to decode")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="refuse larger renders")
    p.add_argument("--out", required=True, help="output .npz (rgb, depth, alpha, features)")


def camera_from_args(args: argparse.Namespace):
    from m3_core.errors import InvalidInputError
    from m3_core.types import Camera, pose_matrix

    if args.frame is not None:
        if not args.data:
            raise InvalidInputError("--frame needs --data")
        from m3_core.data import load_dataset

        ds = load_dataset(args.data)
        if not 0 <= args.frame < len(ds.frames):
            raise InvalidInputError(f"--frame {args.frame} out of range 0..{len(ds.frames) - 1}")
        return ds.frames[args.frame].camera
    if not (args.pose and args.intrinsics):
        raise InvalidInputError("give --frame and --data, or --pose and --intrinsics")
    try:
        pose = [float(v) for v in args.pose.split()]
        values = [float(v) for v in args.intrinsics.split()]
    except ValueError:
        raise InvalidInputError("--pose needs 7 numbers and --intrinsics 6 numbers") from None
    if len(pose) != 7:
        raise InvalidInputError(f"--pose needs 7 numbers (x y z qx qy qz qw), got {len(pose)}")
    if len(values) != 6:
        raise InvalidInputError(
            f"--intrinsics needs 6 numbers (fx fy cx cy w h), got {len(values)}"
        )
    fx, fy, cx, cy = values[:4]
    w, h = (image_side(v, name) for v, name in zip(values[4:], ("width", "height")))
    return Camera(fx, fy, cx, cy, w, h, pose_matrix(pose[:3], pose[3:]).float())


def image_side(value: float, name: str) -> int:
    """A positive whole number of pixels, else InvalidInputError (NaN, inf, 0, 47.5)."""
    from m3_core.errors import InvalidInputError

    if not (math.isfinite(value) and value == int(value) and value > 0):
        raise InvalidInputError(
            f"--intrinsics image {name} must be a whole number > 0, got {value}"
        )
    return int(value)


def check_out_file(path: str) -> None:
    """Refuse an output file path that cannot be written, before any work is done."""
    from m3_core.errors import InvalidInputError

    p = Path(path)
    if p.is_dir():
        raise InvalidInputError(f"--out {path} is a folder; give a file name")
    writable_folder_above(p.parent, f"--out {path}")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from m3_core.errors import InvalidInputError
    from m3_core.memory import Memory
    from m3_core.memory.render import render_memory
    from m3_core.train import resolve_device

    check_out_file(args.out)
    camera = camera_from_args(args)
    if camera.width * camera.height > args.max_pixels:
        raise InvalidInputError(
            f"render of {camera.width}x{camera.height} exceeds --max-pixels {args.max_pixels}"
        )
    memory = Memory.load(args.memory, resolve_device(args.device))
    names = [n.strip() for n in args.features.split(",") if n.strip()]
    out = render_memory(memory, camera, names)
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in out.items()}
    from m3_core.io import atomic_path

    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items()))
    return 0
