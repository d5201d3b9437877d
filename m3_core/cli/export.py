"""``m3 export MEM --ply OUT.ply [--with-queries]``: a memory's Gaussians as a 3DGS PLY."""

from __future__ import annotations

import argparse
import json

DESCRIPTION = (
    "Write a memory's Gaussians as a standard 3DGS PLY (x y z, nx ny nz, f_dc_*, f_rest_*, "
    "opacity as logit, scale_* as log, rot_* as wxyz), which splat viewers and converters "
    "read as is. Coordinates are the memory's world frame: metres, z up, x forward, y left "
    "(ROS REP 103), noted in the PLY header; viewers that expect y up may show the floor as "
    "a wall (rotate about x there). The file is written atomically."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("memory", help="memory folder (memory.json + memory.safetensors)")
    p.add_argument("--ply", required=True, metavar="OUT.ply", help="PLY file to write")
    p.add_argument(
        "--with-queries",
        action="store_true",
        help="add the principal queries as extra properties f_query_0..Q-1 (viewers ignore them)",
    )


def run(args: argparse.Namespace) -> int:
    from m3_core.memory import Memory
    from m3_core.memory.export import check_ply_target, write_memory_ply

    check_ply_target(args.ply)  # before the (possibly long) load
    memory = Memory.load(args.memory)
    path = write_memory_ply(memory, args.ply, with_queries=args.with_queries)
    summary = {
        "ply": str(path),
        "num_gaussians": memory.num_gaussians,
        "query_channels": memory.config.query_dim if args.with_queries else 0,
        "bytes": path.stat().st_size,
    }
    print(json.dumps(summary))
    return 0
