"""Grounding: per-Gaussian relevancy -> 3D objects (centre, axis-aligned box, score).

Steps (all in the memory's world frame, metres):

1. select the Gaussians with relevancy >= ``min_score`` and opacity >= ``min_opacity``;
2. cluster their centres in 3D: ``"voxel"`` (default, fast) links Gaussians in the same or
   one of the 26 neighbouring voxels of edge ``eps`` (sparse connected components; two
   centres closer than ``eps`` are always linked, centres up to 2 sqrt(3) eps apart may be);
   ``"dbscan"`` is scikit-learn's DBSCAN(eps, min_samples=1), i.e. exact single linkage at
   ``eps`` (the slow twin, identical on well-separated objects);
3. drop clusters with fewer than ``min_gaussians`` members;
4. per cluster: a robust axis-aligned box from the ``box_percentile`` / ``100 -
   box_percentile`` percentiles of the member centres, ``center`` = the box's centre,
   ``score`` = opacity-weighted mean relevancy of the members (in [0, 1]);
5. order best first by evidence = sum over members of relevancy x opacity (a large, confident
   cluster beats a few stray Gaussians with the same mean score), keep ``max_results``.

Nothing passing gives ``[]``: unrelated text is not forced to an answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from m3_core.errors import InvalidInputError


@dataclass
class GroundedObject:
    """One grounded object in the memory's world frame (metres)."""

    label: str  # the query text
    score: float  # opacity-weighted mean relevancy of its Gaussians, in [0, 1]
    center: np.ndarray  # [3]
    bbox_min: np.ndarray  # [3]
    bbox_max: np.ndarray  # [3]
    num_gaussians: int
    evidence: float = 0.0  # sum of relevancy x opacity (the ranking key)
    indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    def to_dict(self) -> dict:
        """JSON form used by ``m3 ground --json``."""
        return {
            "label": self.label,
            "score": round(float(self.score), 6),
            "position": [float(v) for v in self.center],
            "bbox_min": [float(v) for v in self.bbox_min],
            "bbox_max": [float(v) for v in self.bbox_max],
            "num_gaussians": int(self.num_gaussians),
        }


@dataclass(frozen=True)
class GroundParams:
    """Grounding settings (see module doc)."""

    min_score: float = 0.5  # relevancy threshold for a Gaussian to count
    min_opacity: float = 0.1  # activated opacity threshold
    eps: float = 0.1  # clustering distance / voxel edge, metres
    min_gaussians: int = 10  # smaller clusters are noise
    max_results: int = 5
    box_percentile: float = 2.0  # robust box from [p, 100 - p] percentiles
    method: str = "voxel"  # "voxel" | "dbscan"

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise InvalidInputError(f"min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 <= self.min_opacity <= 1.0:
            raise InvalidInputError(f"min_opacity must be in [0, 1], got {self.min_opacity}")
        if not self.eps > 0:
            raise InvalidInputError(f"eps must be > 0, got {self.eps}")
        if self.min_gaussians < 1 or self.max_results < 1:
            raise InvalidInputError("min_gaussians and max_results must be >= 1")
        if not 0.0 <= self.box_percentile < 50.0:
            raise InvalidInputError(f"box_percentile must be in [0, 50): {self.box_percentile}")
        if self.method not in ("voxel", "dbscan"):
            raise InvalidInputError(f"unknown clustering method {self.method!r}: voxel, dbscan")


# The 13 "forward" neighbour offsets of the 26-neighbourhood (the other 13 are their negatives).
_OFFSETS = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
     if (dx, dy, dz) > (0, 0, 0)], dtype=np.int64,
)  # fmt: skip


def cluster_voxels(points: np.ndarray, eps: float) -> np.ndarray:
    """Connected components of occupied voxels (edge ``eps``, 26-neighbourhood).

    points [P, 3] -> labels [P] in 0..C-1 (component ids, in no particular order).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(points) == 0:
        return np.zeros(0, np.int64)
    keys = np.floor(np.asarray(points, np.float64) / eps).astype(np.int64)  # [P, 3]
    lo = keys.min(axis=0) - 1
    span = keys.max(axis=0) - lo + 2  # padding: a +-1 step never wraps into another row
    rel = keys - lo
    codes = (rel[:, 0] * span[1] + rel[:, 1]) * span[2] + rel[:, 2]  # [P] mixed radix
    code, inv = np.unique(codes, return_inverse=True)  # [V] ascending, [P]
    inv = inv.reshape(-1)
    steps = (_OFFSETS[:, 0] * span[1] + _OFFSETS[:, 1]) * span[2] + _OFFSETS[:, 2]  # [13]
    rows, cols = [], []
    ids = np.arange(len(code))
    for s in steps:
        j = np.searchsorted(code, code + s).clip(max=len(code) - 1)
        hit = code[j] == code + s
        rows.append(ids[hit])
        cols.append(j[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(code), len(code)))
    _, comp = connected_components(graph, directed=False)
    return comp[inv].astype(np.int64)


def cluster_dbscan(points: np.ndarray, eps: float) -> np.ndarray:
    """Single-linkage clusters at distance ``eps`` (DBSCAN, min_samples=1): labels [P]."""
    from sklearn.cluster import DBSCAN

    if len(points) == 0:
        return np.zeros(0, np.int64)
    return DBSCAN(eps=eps, min_samples=1).fit_predict(np.asarray(points, np.float64))


def ground_points(
    means: torch.Tensor | np.ndarray,  # [N, 3]
    opacities: torch.Tensor | np.ndarray,  # [N] activated, in [0, 1]
    relevancy: torch.Tensor | np.ndarray,  # [N] in [0, 1]
    params: GroundParams | None = None,
    *,
    label: str = "",
    verify: Callable[[GroundedObject], bool] | None = None,
) -> list[GroundedObject]:
    """Cluster relevant, opaque Gaussians into objects, best first (module doc).

    ``verify`` (optional) is called on each candidate in ranking order; those it rejects are
    dropped (e.g. a check that renders the candidate in the training views where it shows).
    """
    p = params or GroundParams()
    xyz, opa, rel = (_numpy(a) for a in (means, opacities, relevancy))
    n = xyz.shape[0]
    if xyz.shape != (n, 3) or opa.shape != (n,) or rel.shape != (n,):
        raise InvalidInputError(
            f"ground: need means [N, 3], opacities [N], relevancy [N]; got {xyz.shape}, "
            f"{opa.shape}, {rel.shape}"
        )
    if not (np.isfinite(rel).all() and np.isfinite(xyz).all()):
        raise InvalidInputError("ground: relevancy or Gaussian centres contain NaN/inf")
    sel = np.flatnonzero((rel >= p.min_score) & (opa >= p.min_opacity))
    if len(sel) < p.min_gaussians:
        return []
    pts = xyz[sel].astype(np.float64)  # [P, 3]
    labels = cluster_voxels(pts, p.eps) if p.method == "voxel" else cluster_dbscan(pts, p.eps)
    weights = (rel[sel] * opa[sel]).astype(np.float64)  # [P]
    opa_sel = opa[sel].astype(np.float64)  # [P]
    order = np.argsort(labels, kind="stable")
    ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    objects = []
    for start, count in zip(starts, counts):
        if count < p.min_gaussians:
            continue
        m = order[start : start + count]  # member rows of this cluster (in pts)
        w, cp = weights[m], pts[m]
        lo, hi = np.percentile(cp, [p.box_percentile, 100.0 - p.box_percentile], axis=0)
        score = float(w.sum() / max(float(opa_sel[m].sum()), 1e-12))
        objects.append(
            GroundedObject(
                label=label, score=min(max(score, 0.0), 1.0), center=(lo + hi) / 2,
                bbox_min=lo, bbox_max=hi, num_gaussians=int(count),
                evidence=float(w.sum()), indices=np.sort(sel[m]),
            )
        )  # fmt: skip
    objects.sort(key=lambda o: (-o.evidence, -o.score))
    if verify is None:
        return objects[: p.max_results]
    kept = []
    for o in objects:  # verify lazily: stop once max_results have passed
        if len(kept) == p.max_results:
            break
        if verify(o):
            kept.append(o)
    return kept


def ground(
    memory,
    relevancy: torch.Tensor | np.ndarray,  # [N]
    params: GroundParams | None = None,
    *,
    label: str = "",
    verify: Callable[[GroundedObject], bool] | None = None,
) -> list[GroundedObject]:
    """:func:`ground_points` on a :class:`~m3_core.memory.Memory`'s Gaussians."""
    g = memory.gaussians
    with torch.no_grad():
        opacities = torch.sigmoid(g["opacities"].detach())
    return ground_points(g["means"].detach(), opacities, relevancy, params, label=label,
                         verify=verify)  # fmt: skip


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().float().cpu().numpy()
    return np.asarray(a)
