"""Standard 3DGS PLY export / import (``plyfile``), plus M3's query vectors.

Vertex properties, float32, in the order of the original 3DGS code and gsplat's exporter:
x y z, nx ny nz (zeros), f_dc_0..2, f_rest_0..3(K-1)-1 (channel-major: all of red's higher
bands, then green, then blue), opacity (logit), scale_0..2 (log), rot_0..3 (wxyz, as stored),
then f_query_0..Q-1 (extra properties; viewers ignore them). Values are the raw parameters of
the ParameterDict (see ``gaussians.py``). Files are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from m3_core.errors import CheckpointError
from m3_core.io import atomic_path


def _cols(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def save_ply(
    params: torch.nn.ParameterDict | dict[str, torch.Tensor],
    path: str | Path,
    *,
    comments: Sequence[str] = (),
) -> None:
    """Write Gaussians (keys of ``gaussians.PARAM_KEYS``; "queries" optional) to ``path``;
    ``comments`` become ``comment`` lines of the header (one line each)."""
    p = {k: v.detach().cpu().float() for k, v in params.items()}
    n = p["means"].shape[0]
    sh_n = p.get("shN", torch.zeros(n, 0, 3))
    queries = p.get("queries", torch.zeros(n, 0))
    blocks = [
        ("xyz", p["means"], ["x", "y", "z"]),
        ("normals", torch.zeros(n, 3), ["nx", "ny", "nz"]),
        ("dc", p["sh0"].reshape(n, 3), _cols("f_dc_", 3)),
        ("rest", sh_n.permute(0, 2, 1).reshape(n, -1), _cols("f_rest_", sh_n.shape[1] * 3)),
        ("opacity", p["opacities"].reshape(n, 1), ["opacity"]),
        ("scale", p["scales"], _cols("scale_", 3)),
        ("rot", p["quats"], _cols("rot_", 4)),
        ("query", queries.reshape(n, -1), _cols("f_query_", queries.shape[1])),
    ]
    names = [name for _, _, cols in blocks for name in cols]
    data = np.concatenate([t.numpy().reshape(n, -1) for _, t, _ in blocks], axis=1)
    vertex = np.empty(n, dtype=[(name, "f4") for name in names])
    for i, name in enumerate(names):
        vertex[name] = data[:, i]
    with atomic_path(path) as tmp:
        ply = PlyData([PlyElement.describe(vertex, "vertex")], comments=list(comments))
        ply.write(str(tmp))


def load_ply(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.ParameterDict:
    """Read a 3DGS PLY (ours or any standard one) -> ParameterDict of float32 parameters.

    A file without f_query_* properties gives "queries" [N, 0]. Raises CheckpointError when the
    file is missing, unreadable or lacks the standard properties.
    """
    path = Path(path)
    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"].data
    except Exception as exc:  # plyfile raises several types for corrupt files
        raise CheckpointError(f"cannot read Gaussian PLY {path}: {exc}") from exc
    names = set(v.dtype.names or ())

    def get(cols: list[str]) -> torch.Tensor:
        missing = [c for c in cols if c not in names]
        if missing:
            raise CheckpointError(f"{path} is not a 3DGS PLY: missing {missing[:3]}")
        return torch.from_numpy(np.stack([np.asarray(v[c], np.float32) for c in cols], axis=1))

    n = len(v)
    n_rest = len([c for c in names if c.startswith("f_rest_")])
    n_query = len([c for c in names if c.startswith("f_query_")])
    k_rest = n_rest // 3
    if n_rest % 3 or math.isqrt(k_rest + 1) ** 2 != k_rest + 1:
        raise CheckpointError(f"{path}: {n_rest} f_rest properties is not a valid SH layout")
    params = {
        "means": get(["x", "y", "z"]),
        "scales": get(_cols("scale_", 3)),
        "quats": get(_cols("rot_", 4)),
        "opacities": get(["opacity"])[:, 0],
        "sh0": get(_cols("f_dc_", 3)).reshape(n, 1, 3),
        "shN": get(_cols("f_rest_", n_rest)).reshape(n, 3, k_rest).permute(0, 2, 1).contiguous()
        if n_rest
        else torch.zeros(n, 0, 3),
        "queries": get(_cols("f_query_", n_query)) if n_query else torch.zeros(n, 0),
    }
    return torch.nn.ParameterDict({k: torch.nn.Parameter(t.to(device)) for k, t in params.items()})
