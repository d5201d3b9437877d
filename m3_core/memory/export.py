"""A memory's Gaussians as a standard 3DGS PLY, for viewers and converters.

The file is :func:`m3_core.splat.ply.save_ply`'s: vertex properties x y z, nx ny nz (zeros),
f_dc_0..2, f_rest_* (channel-major), opacity (logit), scale_0..2 (log), rot_0..3 (wxyz), as
the original 3DGS code and gsplat write them, so web splat viewers and converters read it
as is. With ``with_queries`` the principal queries follow as f_query_0..Q-1 (viewers ignore
unknown properties; :func:`m3_core.splat.ply.load_ply` reads them back).

The header's ``comment`` lines say the world frame: metres, z up, x forward, y left (ROS
REP 103), the ROS frame id when the memory knows it, the SH degree and, with queries, which
f_query_* channels belong to which feature model. Many viewers assume a y-down or y-up
camera convention: rotate the scene about x in the viewer if the floor appears as a wall.
"""

from __future__ import annotations

from pathlib import Path

from m3_core.errors import InvalidInputError
from m3_core.io import writable_folder_above
from m3_core.memory.memory import Memory
from m3_core.splat.ply import save_ply

WORLD_FRAME_NOTE = "world frame: metres, z up, x forward, y left (ROS REP 103)"


def check_ply_target(path: str | Path) -> Path:
    """``path`` as a Path; InvalidInputError when it is a folder or cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise InvalidInputError(f"{path} is a folder; give the PLY file to write, e.g. out.ply")
    writable_folder_above(p.parent, f"cannot write {path}")
    return p


def header_comments(memory: Memory, *, with_queries: bool) -> list[str]:
    """The ``comment`` lines of the exported PLY (module doc), one line each."""
    lines = ["m3 memory export (3DGS PLY)", WORLD_FRAME_NOTE]
    frame = memory.world_frame
    if frame:
        lines.append(f"frame_id {frame}")
    lines.append(f"sh_degree {memory.config.sh_degree}")
    if with_queries:
        for name, entry in memory.layout.to_dict()["models"].items():
            a, b = entry["start"], entry["stop"]
            lines.append(f"f_query_{a}..f_query_{b - 1}: principal queries of {name}")
    return [" ".join(line.split()) for line in lines]  # no newline can end the header early


def write_memory_ply(memory: Memory, path: str | Path, *, with_queries: bool = False) -> Path:
    """Write ``memory``'s Gaussians to ``path`` atomically (module doc); returns the path."""
    p = check_ply_target(path)
    params = {k: v for k, v in memory.gaussians.items() if with_queries or k != "queries"}
    save_ply(params, p, comments=header_comments(memory, with_queries=with_queries))
    return p
