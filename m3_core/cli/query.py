"""``m3 query MEM "text" (--pose "x y z qx qy qz qw" --intrinsics "fx fy cx cy w h" |
--frame I --data DATA) --out relevancy.png``.

Renders the memory's query map at the camera, decodes it with GMA and writes the relevancy
to ``text`` as a heatmap: ``.png`` (turbo colour map, 0 = dark blue, 1 = dark red) or
``.npy`` (float32 [H, W] in [0, 1]). The pose is the camera's optical frame in the world
(x right, y down, z forward).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("memory", help="memory folder")
    p.add_argument("text", help="query text")
    p.add_argument("--frame", type=int, help="frame index of --data to render from")
    p.add_argument("--data", help="dataset folder (with --frame)")
    p.add_argument("--pose", help='camera optical-frame pose in the world: "x y z qx qy qz qw"')
    p.add_argument("--intrinsics", help='"fx fy cx cy w h" in pixels')
    p.add_argument("--feature", default=None, help="feature to query (default: first with text)")
    p.add_argument("--weights", default=None, help="folder of extractor weights (text towers)")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="refuse larger renders")
    p.add_argument("--out", required=True, help="output heatmap (.png or .npy)")


def heatmap_png(rel) -> bytes:
    """[H, W] relevancy in [0, 1] -> PNG bytes (turbo colour map)."""
    import numpy as np
    from matplotlib import colormaps

    from m3_core.data.images import encode_png

    rgb = colormaps["turbo"](np.clip(rel, 0.0, 1.0))[..., :3]  # [H, W, 3]
    return encode_png((rgb * 255).round().astype(np.uint8))


def run(args: argparse.Namespace) -> int:
    import io

    import numpy as np

    from m3_core.cli.render import camera_from_args, check_out_file
    from m3_core.errors import InvalidInputError
    from m3_core.io import atomic_write_bytes
    from m3_core.query import MemoryPredictor

    suffix = args.out.lower().rsplit(".", 1)[-1]
    if suffix not in ("png", "npy"):
        raise InvalidInputError(f"--out must end in .png or .npy, got {args.out!r}")
    check_out_file(args.out)
    camera = camera_from_args(args)
    if camera.width * camera.height > args.max_pixels:
        raise InvalidInputError(
            f"render of {camera.width}x{camera.height} exceeds --max-pixels {args.max_pixels}"
        )
    pred = MemoryPredictor.load(args.memory, device=args.device, weights_dir=args.weights)
    rel = pred.relevancy_image(args.text, camera, feature=args.feature)  # [H, W]
    if suffix == "png":
        data = heatmap_png(rel)
    else:
        buf = io.BytesIO()
        np.save(buf, rel.astype(np.float32))
        data = buf.getvalue()
    atomic_write_bytes(args.out, data)
    print(f"wrote {args.out}: {rel.shape[1]}x{rel.shape[0]} relevancy to {args.text!r}, "
          f"max {float(rel.max()):.3f}")  # fmt: skip
    return 0
