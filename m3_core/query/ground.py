"""Grounding: per-Gaussian relevancy -> 3D objects (centre, axis-aligned box, score).

Steps (all in the memory's world frame, metres):

1. candidates: Gaussians with relevancy >= ``min_score``, opacity >= ``min_opacity`` and, when
   the memory has a grounding index, training-view visibility >= ``min_visibility`` pixels
   (hidden Gaussians inside objects or behind walls say nothing about what is seen);
2. objects, not blobs: candidates are linked when their centres are within ``eps``
   (``"kdtree"``, default: each to its ``max_neighbours`` nearest, so the cost stays linear
   in dense clouds) AND their decoded features agree (cosine >=
   ``link_cosine``), and connected components are the objects; so two objects, or an object
   and the wall behind it, do not merge through a few blended Gaussians between them.
   ``"voxel"`` (26-neighbourhood of voxels of edge ``eps``, links up to 2 sqrt(3) eps) and
   ``"dbscan"`` (scikit-learn, exact single linkage, the slow twin of ``"kdtree"`` without
   feature edges) stay available; then fragments of one object (faces seen apart, split where
   sparse Gaussians leave a gap wider than ``eps``) join: clusters whose boxes come within
   ``merge_gap`` of each other and whose mean features agree (``link_cosine``);
3. per object: ``support`` = the training-view pixel mass its members explain (sum of
   opacity x visibility; member count without an index), ``score`` = the support-weighted
   mean relevancy (calibrated: see relevancy.py), a robust axis-aligned box from the
   ``box_percentile`` / ``100 - box_percentile`` percentiles of the member centres, and
   ``center`` = the box's centre. The members are the object's *visible surface* points, so
   an object seen from one side gets the box of its visible faces, and its centre lies on
   them, not at the solid's centre;
4. objects that do not stand out are dropped: fewer than ``min_gaussians`` members, a score
   less than ``min_contrast`` above the room's support-weighted mean relevancy for the same
   query (a text that matches everything a little matches nothing), or support below
   ``min_relative_support`` of the best object's (stray fragments);
5. best first by score x support, at most ``max_results``.

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
    score: float  # support-weighted mean relevancy of its Gaussians, in [0, 1]
    center: np.ndarray  # [3] centre of the box of its visible surface points
    bbox_min: np.ndarray  # [3]
    bbox_max: np.ndarray  # [3]
    num_gaussians: int
    evidence: float = 0.0  # score x support (the ranking key)
    support: float = 0.0  # training-view pixels its Gaussians explain (count without index)
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
            "support": round(float(self.support), 3),
        }


METHODS = ("kdtree", "voxel", "dbscan")
MAX_MERGE_CLUSTERS = 1024  # clusters considered by merge_fragments (largest first)


@dataclass(frozen=True)
class GroundParams:
    """Grounding settings (see module doc)."""

    min_score: float = 0.5  # calibrated relevancy for a Gaussian to count (relevancy.py)
    min_opacity: float = 0.1  # activated opacity threshold
    min_visibility: float = 1.0  # training-view pixels a Gaussian must explain (with an index)
    eps: float = 0.1  # linking distance between Gaussian centres, metres
    link_cosine: float = 0.8  # decoded features of linked Gaussians agree at least this much
    merge_gap: float = 0.15  # clusters whose boxes come this close are one object (0: never)
    max_neighbours: int = 16  # links per Gaussian (kdtree; 0: every pair within eps)
    min_gaussians: int = 10  # smaller clusters are noise
    min_contrast: float = 0.25  # score above the room's mean relevancy for the same text
    min_relative_support: float = 0.05  # of the best object's support
    max_results: int = 5
    box_percentile: float = 2.0  # robust box from [p, 100 - p] percentiles
    method: str = "kdtree"  # "kdtree" | "voxel" | "dbscan"

    def __post_init__(self) -> None:
        for name in ("min_score", "min_opacity", "min_contrast", "min_relative_support"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InvalidInputError(f"{name} must be in [0, 1], got {v}")
        if not -1.0 <= self.link_cosine <= 1.0:
            raise InvalidInputError(f"link_cosine must be in [-1, 1], got {self.link_cosine}")
        if not self.min_visibility >= 0:
            raise InvalidInputError(f"min_visibility must be >= 0, got {self.min_visibility}")
        if not self.eps > 0:
            raise InvalidInputError(f"eps must be > 0, got {self.eps}")
        if not self.merge_gap >= 0:
            raise InvalidInputError(f"merge_gap must be >= 0, got {self.merge_gap}")
        if self.max_neighbours < 0:
            raise InvalidInputError(f"max_neighbours must be >= 0, got {self.max_neighbours}")
        if self.min_gaussians < 1 or self.max_results < 1:
            raise InvalidInputError("min_gaussians and max_results must be >= 1")
        if not 0.0 <= self.box_percentile < 50.0:
            raise InvalidInputError(f"box_percentile must be in [0, 50): {self.box_percentile}")
        if self.method not in METHODS:
            raise InvalidInputError(f"unknown clustering method {self.method!r}: {METHODS}")


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


def cluster_kdtree(
    points: np.ndarray,  # [P, 3]
    eps: float,
    features: np.ndarray | None = None,  # [P, d] unit rows
    link_cosine: float = -1.0,
    neighbours: int | None = None,
) -> np.ndarray:
    """Connected components of the graph linking centres within ``eps`` (scipy's cKDTree)
    whose ``features`` agree (cosine >= ``link_cosine``): labels [P]. ``neighbours`` caps the
    links per centre to its nearest ones (cost O(P k d) however dense the cloud; components
    can only split where a centre has more than k others within ``eps``, and fragments join
    again in :func:`merge_fragments`); None links every pair (exact single linkage)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(points)
    if n == 0:
        return np.zeros(0, np.int64)
    tree = cKDTree(np.asarray(points, np.float64))
    if neighbours is None:
        pairs = tree.query_pairs(eps, output_type="ndarray")  # [E, 2]
    else:
        k = min(n, int(neighbours) + 1)  # + the centre itself
        dist, idx = tree.query(points, k=k, distance_upper_bound=eps)  # [P, k]
        dist, idx = dist.reshape(n, k), idx.reshape(n, k)
        rows = np.repeat(np.arange(n), k).reshape(n, k)
        ok = np.isfinite(dist) & (idx != rows)
        pairs = np.stack([rows[ok], idx[ok]], axis=1)  # [E, 2]
    if features is not None and len(pairs):
        f = np.asarray(features, np.float32)
        cos = np.concatenate([
            np.einsum("ij,ij->i", f[c[:, 0]], f[c[:, 1]])
            for c in np.array_split(pairs, max(1, len(pairs) // 65536))
        ])  # fmt: skip
        pairs = pairs[cos >= link_cosine]
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def merge_fragments(
    points: np.ndarray,  # [P, 3]
    labels: np.ndarray,  # [P] cluster ids
    gap: float,
    features: np.ndarray | None = None,  # [P, d]
    link_cosine: float = -1.0,
    max_clusters: int = MAX_MERGE_CLUSTERS,
) -> np.ndarray:
    """Join clusters whose axis-aligned boxes come within ``gap`` of each other and whose
    mean ``features`` agree (cosine >= ``link_cosine``): labels [P] -> labels [P]. Only the
    ``max_clusters`` largest clusters take part (the pairwise test is quadratic)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if gap <= 0 or len(points) == 0:
        return labels
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    n_c = len(counts)
    if n_c < 2:
        return labels
    order = np.argsort(inv, kind="stable")
    starts = np.searchsorted(inv[order], np.arange(n_c))
    sorted_pts = np.asarray(points, np.float64)[order]
    lo = np.minimum.reduceat(sorted_pts, starts)  # [C, 3]
    hi = np.maximum.reduceat(sorted_pts, starts)
    cand = np.sort(np.argsort(-counts, kind="stable")[:max_clusters])  # [c]
    lc, hc = lo[cand], hi[cand]
    sep = np.maximum(lc[:, None] - hc[None], lc[None] - hc[:, None]).clip(min=0.0)  # [c, c, 3]
    close = np.linalg.norm(sep, axis=-1) <= gap  # [c, c]
    if features is not None:
        mean = np.add.reduceat(np.asarray(features, np.float64)[order], starts)[cand]  # [c, d]
        mean /= np.linalg.norm(mean, axis=1, keepdims=True).clip(min=1e-12)
        close &= mean @ mean.T >= link_cosine
    r, c = np.nonzero(np.triu(close, 1))
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(cand), len(cand)))
    comp = connected_components(graph, directed=False)[1]
    new = np.arange(n_c) + len(cand)  # clusters left out keep ids of their own
    new[cand] = comp
    return new[inv].astype(np.int64)


def ground_points(
    means: torch.Tensor | np.ndarray,  # [N, 3]
    opacities: torch.Tensor | np.ndarray,  # [N] activated, in [0, 1]
    relevancy: torch.Tensor | np.ndarray,  # [N] in [0, 1]
    params: GroundParams | None = None,
    *,
    label: str = "",
    verify: Callable[[GroundedObject], bool] | None = None,
    features: torch.Tensor | np.ndarray | None = None,  # [N, d] unit decoded features
    visibility: torch.Tensor | np.ndarray | None = None,  # [N] training-view pixel mass
) -> list[GroundedObject]:
    """Group relevant, visible Gaussians into objects, best first (module doc).

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
    vis = None if visibility is None else _numpy(visibility).astype(np.float64)
    feats = None if features is None else _numpy(features)
    if (vis is not None and vis.shape != (n,)) or (feats is not None and feats.shape[0] != n):
        raise InvalidInputError("ground: features [N, d] and visibility [N] must match means")
    # per-Gaussian weight: opacity x training-view pixel mass (opacity alone without an index)
    mass = opa.astype(np.float64) * (vis if vis is not None else 1.0)  # [N]
    seen = opa >= p.min_opacity
    if vis is not None:
        seen &= vis >= p.min_visibility
    room = float((rel * mass)[seen].sum() / max(float(mass[seen].sum()), 1e-12))
    sel = np.flatnonzero((rel >= p.min_score) & seen)
    if len(sel) < p.min_gaussians:
        return []
    pts = xyz[sel].astype(np.float64)  # [P, 3]
    f_sel = None if feats is None else feats[sel]  # [P, d]
    if p.method == "kdtree":
        k = p.max_neighbours or None
        labels = cluster_kdtree(pts, p.eps, f_sel, p.link_cosine, neighbours=k)
    elif p.method == "voxel":
        labels = cluster_voxels(pts, p.eps)
    else:
        labels = cluster_dbscan(pts, p.eps)
    labels = merge_fragments(pts, labels, p.merge_gap, f_sel, p.link_cosine)
    m_sel, r_sel = mass[sel], rel[sel].astype(np.float64)  # [P]
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    objects = []
    for start, count in zip(starts, counts):
        if count < p.min_gaussians:
            continue
        m = order[start : start + count]  # member rows of this cluster (in pts)
        support = float(m_sel[m].sum())
        score = float((r_sel[m] * m_sel[m]).sum() / max(support, 1e-12))
        if score < room + p.min_contrast:
            continue
        lo, hi = np.percentile(pts[m], [p.box_percentile, 100.0 - p.box_percentile], axis=0)
        objects.append(
            GroundedObject(
                label=label, score=min(max(score, 0.0), 1.0), center=(lo + hi) / 2,
                bbox_min=lo, bbox_max=hi, num_gaussians=int(count), evidence=score * support,
                support=support, indices=np.sort(sel[m]),
            )
        )  # fmt: skip
    if objects:
        best = max(o.support for o in objects)
        objects = [o for o in objects if o.support >= p.min_relative_support * best]
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
    features: torch.Tensor | np.ndarray | None = None,  # [N, d]
    visibility: torch.Tensor | np.ndarray | None = None,  # [N]
) -> list[GroundedObject]:
    """:func:`ground_points` on a :class:`~m3_core.memory.Memory`'s Gaussians."""
    g = memory.gaussians
    with torch.no_grad():
        opacities = torch.sigmoid(g["opacities"].detach())
    return ground_points(
        g["means"].detach(), opacities, relevancy, params, label=label, verify=verify,
        features=features, visibility=visibility,
    )  # fmt: skip


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().float().cpu().numpy()
    return np.asarray(a)
