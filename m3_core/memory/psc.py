"""Principal Scene Components (PSC): Algorithm 1 of M3, greedy similarity reduction.

Rule (M3, Algorithm 1). Let x_i be the L2-normalised rows of ``features`` [n, d], walked in
row order (for patch grids: view order, then raster order; see :func:`collect_features`).
For each x_i not yet *claimed*, let J_i = {j : cos(x_i, x_j) >= theta}. If no member of J_i
is claimed, x_i is **kept** and every member of J_i becomes claimed; otherwise x_i is skipped.
The bank is the kept rows in their **raw** (un-normalised) form, in walk order.

Numerical conventions (shared by the fast paths and their slow twins):
  * "cos >= theta" means ``cos >= theta - MATCH_TOLERANCE`` (64 float32 epsilons, 7.6e-6)
    with cos evaluated in float64 from the raw rows, so theta = 1.0 really means "dedupe
    only" (scaled copies match despite rounding) and every x_i is a member of its own J_i.
  * The fast paths multiply in float32 (bfloat16 for the cluster prefilter) and settle every
    pair within the proven rounding bound of the threshold in float64
    (:mod:`m3_core.memory.psc_match`), so they keep exactly the rows of the float64 plain
    loop, ties at the threshold included, on any device and for any input dtype.
  * all-zero or non-finite rows are refused (they have no direction): drop them first, as
    :func:`collect_features` does.

Speed: :func:`build_psc` walks chunks of still-unclaimed rows. With ``clusters`` (default
n / 64 from 4096 rows on) each row is compared only with the k-means clusters that can hold a
match (exact angular bound), so clustered features like image patches cost about
n * (matches + cluster size) * d instead of n^2 * d; where the bound prunes little (isotropic
noise) a chunk falls back to one dense product. Peak memory: ``block_entries`` similarities
(4 bytes each) plus the edge lists, independent of n^2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from m3_core.errors import InvalidInputError
from m3_core.memory.psc_match import ClusterIndex, decide, exact_cos, product_error, unit_rows

MATCH_TOLERANCE = 64.0 * torch.finfo(torch.float32).eps
AUTO_CLUSTER_MIN_ROWS = 4096  # below this the dense walk is as fast as building clusters
AUTO_CLUSTER_SIZE = 64  # rows per k-means cluster when ``clusters`` is None


def _check_features(features: torch.Tensor, what: str) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise InvalidInputError(f"{what} must be a 2-D tensor [n, d], got {shape}")
    if not features.is_floating_point():
        raise InvalidInputError(f"{what} must be floating point, got {features.dtype}")
    if features.shape[0] and features.shape[1] == 0:
        raise InvalidInputError(f"{what} has zero feature dimension")
    if not bool(torch.isfinite(features).all()):
        raise InvalidInputError(f"{what} contains NaN or infinite values")
    zero = (features == 0).all(dim=1)
    if bool(zero.any()):
        first = int(zero.nonzero()[0])
        raise InvalidInputError(
            f"{what} has {int(zero.sum())} all-zero rows (first: {first}); drop them first"
        )


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise InvalidInputError(f"PSC threshold must be in (0, 1], got {threshold}")
    return threshold


def _check_positive(**values: int | None) -> None:
    for name, v in values.items():
        if v is not None and int(v) < 1:
            raise InvalidInputError(f"{name} must be positive, got {v}")


def build_psc_reference(
    features: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow twin of :func:`build_psc`: the plain loop of Algorithm 1 in float64 (O(n^2 d))."""
    _check_features(features, "features")
    thr = _check_threshold(threshold) - MATCH_TOLERANCE
    x = unit_rows(features, torch.float64)  # [n, d]
    n = x.shape[0]
    claimed = torch.zeros(n, dtype=torch.bool, device=x.device)
    kept: list[int] = []
    for i in range(n):
        if claimed[i]:
            continue
        members = (x @ x[i]) >= thr  # [n] J_i
        members[i] = True
        if bool((members & claimed).any()):
            continue
        kept.append(i)
        claimed |= members
    idx = torch.tensor(kept, dtype=torch.long, device=features.device)
    return features[idx], idx


def _greedy(r: np.ndarray, col: np.ndarray, rows: np.ndarray, claimed: np.ndarray) -> list[int]:
    """Sequential part of Algorithm 1 for one chunk, in walk order.

    ``(r, col)``: the pairs (local row of the chunk, global column) of J for the chunk's
    ``rows`` [c] (every row with itself); ``claimed`` [n] is updated in place. Returns the
    kept global rows.
    """
    order = np.argsort(r, kind="stable")
    r, col = r[order], col[order]
    ptr = np.searchsorted(r, np.arange(rows.size + 1))  # [c + 1] CSR offsets
    blocked = np.bincount(r[claimed[col]], minlength=rows.size) > 0  # J meets an older claim
    kept: list[int] = []
    for i in np.flatnonzero(~blocked).tolist():
        nb = col[ptr[i] : ptr[i + 1]]
        if claimed[nb].any():  # claimed by a row kept earlier in this chunk
            continue
        claimed[nb] = True
        kept.append(int(rows[i]))
    return kept


def subsample_indices(
    n: int, max_inputs: int | None, generator: torch.Generator | None
) -> torch.Tensor | None:
    """Sorted random subset of ``range(n)`` of size ``max_inputs`` (None when n fits).

    Sorting keeps the walk in view / raster order. ``generator=None`` means a CPU generator
    seeded with 0, so the result is reproducible by default.
    """
    if max_inputs is None or n <= max_inputs:
        return None
    _check_positive(max_inputs=max_inputs)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return perm[: int(max_inputs)].sort().values.cpu()


def build_psc(
    features: torch.Tensor,
    threshold: float,
    *,
    chunk_size: int = 4096,
    max_inputs: int | None = None,
    generator: torch.Generator | None = None,
    clusters: int | None = None,
    block_entries: int = 1 << 24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 over ``features`` [n, d] -> (bank [t, d] raw rows, kept_indices [t] long).

    Exactly the rows of :func:`build_psc_reference` (see the module doc), computed on
    ``features.device`` a chunk of at most ``chunk_size`` unclaimed rows at a time, each chunk
    holding at most ``block_entries`` similarities (a single row may exceed it).

    ``clusters``: number of k-means clusters of the prefilter; None: n // 64 when
    n >= 4096, else 0; 0 or 1: the dense walk (every chunk against all n rows). The clustering
    uses ``generator`` and changes only the speed, never the result.

    ``max_inputs`` (ours, not in M3): if n > max_inputs, Algorithm 1 runs on a random subset
    of ``max_inputs`` rows drawn with ``generator`` (default: seeded with 0) and kept in their
    original order; ``kept_indices`` always index the rows of the full ``features``.
    """
    _check_features(features, "features")
    thr = _check_threshold(threshold) - MATCH_TOLERANCE
    _check_positive(chunk_size=chunk_size, block_entries=block_entries)
    if clusters is not None and int(clusters) < 0:
        raise InvalidInputError(f"clusters must be >= 0, got {clusters}")
    sub = subsample_indices(features.shape[0], max_inputs, generator)
    if sub is not None:
        sub = sub.to(features.device)
        _, kept = build_psc(
            features[sub], threshold, chunk_size=chunk_size, clusters=clusters,
            block_entries=block_entries,
        )  # fmt: skip
        return features[sub[kept]], sub[kept]
    firsts = first_occurrences(features)
    if firsts is not None:  # repeated rows decide alike: walk the distinct ones
        _, kept = build_psc(
            features[firsts], threshold, chunk_size=chunk_size, clusters=clusters,
            generator=generator, block_entries=block_entries,
        )  # fmt: skip
        return features[firsts[kept]], firsts[kept]
    n, d = features.shape
    if clusters is None:
        clusters = n // AUTO_CLUSTER_SIZE if n >= AUTO_CLUSTER_MIN_ROWS else 0
    x = unit_rows(features)  # [n, d] float32
    bound = product_error(d, torch.float32)
    kept = None
    if clusters > 1:
        index = ClusterIndex(x, thr, clusters, generator=generator)
        pairs = index.graph(
            x, thr, bound, lambda i, j: exact_cos(features[i], features[j]),
            block_entries=int(block_entries),
        )  # fmt: skip
        if pairs is not None:  # J of every row; each row is its own member
            own = torch.arange(n, device=x.device)
            r, col = torch.cat([pairs[0], own]), torch.cat([pairs[1], own])
            kept = _greedy(r.cpu().numpy(), col.cpu().numpy(), np.arange(n), np.zeros(n, bool))
    if kept is None:
        kept = _dense_walk(features, x, thr, bound, min(chunk_size, block_entries // max(n, 1)))
    idx = torch.tensor(kept, dtype=torch.long, device=features.device)
    return features[idx], idx


def first_occurrences(features: torch.Tensor) -> torch.Tensor | None:
    """Sorted indices [u] of the first occurrence of each distinct row of ``features``; None
    when all rows are distinct. Algorithm 1 keeps the same rows on them: copies share every
    cosine, so a copy is claimed exactly when its first occurrence is, and a kept row claims
    all its copies (exact label maps repeat a few vectors thousands of times, and their
    match lists would grow with the square of the repeats)."""
    n = features.shape[0]
    _, inverse = torch.unique(features, dim=0, return_inverse=True)  # [n]
    u = int(inverse.max()) + 1 if n else 0
    if u == n:
        return None
    first = torch.full((u,), n, dtype=torch.long, device=features.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=features.device), "amin")
    return first.sort().values


def _dense_walk(
    features: torch.Tensor, x: torch.Tensor, thr: float, bound: float, chunk: int
) -> list[int]:
    """Algorithm 1 on unit rows x [n, d]: chunks of still-unclaimed rows against all n rows."""
    n = x.shape[0]
    claimed = np.zeros(n, dtype=bool)  # [n]
    kept: list[int] = []
    pos = 0
    while pos < n:
        rows = np.flatnonzero(~claimed[pos:])[: max(1, chunk)] + pos  # [c] ascending
        if rows.size == 0:
            break
        pos = int(rows[-1]) + 1
        rows_t = torch.from_numpy(rows).to(x.device)
        hit = decide(
            x[rows_t] @ x.T, thr, bound,
            lambda i, j: exact_cos(features[rows_t[i]], features[j]),  # noqa: B023
        )  # fmt: skip  # [c, n]
        hit[torch.arange(rows.size, device=x.device), rows_t] = True
        r, col = hit.nonzero(as_tuple=True)
        kept += _greedy(r.cpu().numpy(), col.cpu().numpy(), rows, claimed)
    return kept


def extend_psc_reference(
    bank: torch.Tensor, new_features: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow twin of :func:`extend_psc`: one new feature at a time against the growing bank,
    in float64."""
    _check_extend(bank, new_features)
    thr = _check_threshold(threshold) - MATCH_TOLERANCE
    x = unit_rows(new_features, torch.float64)  # [n, d]
    rows = unit_rows(bank, torch.float64) if bank.shape[0] else x[:0]  # [t, d]
    added: list[int] = []
    for i in range(x.shape[0]):
        if rows.shape[0] and bool(((rows @ x[i]) >= thr).any()):
            continue
        added.append(i)
        rows = torch.cat([rows, x[i : i + 1]])
    idx = torch.tensor(added, dtype=torch.long, device=new_features.device)
    return torch.cat([bank, new_features[idx].to(bank.dtype)]), idx


def _check_extend(bank: torch.Tensor, new_features: torch.Tensor) -> None:
    if not isinstance(bank, torch.Tensor) or bank.dim() != 2:
        raise InvalidInputError("bank must be a 2-D tensor [t, d]")
    if bank.shape[0]:
        _check_features(bank, "bank")
    _check_features(new_features, "new_features")
    if new_features.shape[1] != bank.shape[1]:
        raise InvalidInputError(
            f"new_features have dimension {new_features.shape[1]}, the bank {bank.shape[1]}"
        )
    if new_features.device != bank.device:
        raise InvalidInputError(f"bank on {bank.device} but new_features on {new_features.device}")


def extend_psc(
    bank: torch.Tensor,
    new_features: torch.Tensor,
    threshold: float,
    *,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow a bank [t, d] with new features [n, d] -> (bank' [t + a, d], added_indices [a]).

    Incremental rule for a robot memory that keeps learning (ours): walking ``new_features``
    in order, a feature is appended (raw) only if no row already in the bank, including rows
    appended earlier in this call, has cosine >= theta with it (same rule and exactness as
    :func:`build_psc`). Existing rows never move, so earlier bank indices stay valid.
    Peak memory O(chunk_size * (t + n)).
    """
    _check_extend(bank, new_features)
    thr = _check_threshold(threshold) - MATCH_TOLERANCE
    _check_positive(chunk_size=chunk_size)
    t, d = bank.shape
    bound = product_error(d, torch.float32)
    dev = new_features.device
    cur = unit_rows(bank) if t else torch.zeros(0, d, device=dev)  # [t', d] rows so far
    cur_ids = torch.arange(t, device=dev)  # [t'] ids: < t bank row, >= t new row + t
    x = unit_rows(new_features)  # [n, d]

    def raw(ids: torch.Tensor) -> torch.Tensor:  # [p] ids -> [p, d] float64 raw rows
        out = torch.empty(ids.numel(), d, dtype=torch.float64, device=dev)
        old = ids < t
        out[old] = bank[ids[old]].double()
        out[~old] = new_features[ids[~old] - t].double()
        return out

    added_parts: list[torch.Tensor] = []
    for start in range(0, x.shape[0], int(chunk_size)):
        xc = x[start : start + int(chunk_size)]  # [c, d]
        ids = torch.arange(start, start + xc.shape[0], device=dev) + t  # [c]
        near_bank = decide(
            xc @ cur.T, thr, bound, lambda i, j, a=ids, b=cur_ids: exact_cos(raw(a[i]), raw(b[j]))
        )  # [c, t']
        cand = (~near_bank.any(dim=1)).nonzero().squeeze(1)  # [r] far from every bank row
        if cand.numel() == 0:
            continue
        cid = ids[cand]
        near = (
            decide(
                xc[cand] @ xc[cand].T,
                thr,
                bound,
                lambda i, j, c=cid: exact_cos(raw(c[i]), raw(c[j])),
            )
            .cpu()
            .numpy()
        )  # [r, r]
        keep = np.zeros(cand.numel(), dtype=bool)
        for r in range(cand.numel()):  # a candidate is blocked by an earlier added one
            keep[r] = not (near[r, :r] & keep[:r]).any()
        sel = cand[torch.from_numpy(keep).to(dev)]
        cur = torch.cat([cur, xc[sel]])
        cur_ids = torch.cat([cur_ids, ids[sel]])
        added_parts.append(sel + start)
    idx = torch.cat(added_parts) if added_parts else torch.zeros(0, dtype=torch.long)
    idx = idx.to(device=dev, dtype=torch.long)
    return torch.cat([bank, new_features[idx].to(bank.dtype)]), idx


def collect_features(
    grids: Sequence[torch.Tensor], *, return_index: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Flatten per-view feature grids [h, w, d] into rows [n, d] for :func:`build_psc`.

    Order: view order, then raster order (row y, then column x). All-zero vectors (no
    feature, e.g. masked or padded patches) are skipped. With ``return_index`` also returns
    [n, 3] long (view, y, x) of every row. Grids may differ in h, w but not in d.
    """
    if len(grids) == 0:
        raise InvalidInputError("collect_features needs at least one grid")
    dims = set()
    rows: list[torch.Tensor] = []
    where: list[torch.Tensor] = []
    for v, g in enumerate(grids):
        if not isinstance(g, torch.Tensor) or g.dim() != 3:
            shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise InvalidInputError(f"grid {v} must be [h, w, d], got {shape}")
        if not bool(torch.isfinite(g).all()):
            raise InvalidInputError(f"grid {v} contains NaN or infinite values")
        dims.add(g.shape[2])
        if len(dims) > 1:
            raise InvalidInputError(f"grids disagree on feature dimension: {sorted(dims)}")
        flat = g.reshape(-1, g.shape[2])  # [h*w, d]
        ok = (flat != 0).any(dim=1)  # [h*w]
        rows.append(flat[ok])
        if return_index:
            lin = ok.nonzero().squeeze(1)
            w = g.shape[1]
            vv = torch.full_like(lin, v)
            where.append(torch.stack([vv, lin // w, lin % w], dim=1))
    feats = torch.cat(rows)
    if return_index:
        return feats, torch.cat(where)
    return feats
