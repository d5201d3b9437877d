"""Principal Scene Components (PSC): Algorithm 1 of M3, greedy similarity reduction.

Rule (M3, Algorithm 1). Let x_i be the L2-normalised rows of ``features`` [n, d], walked in
row order (for patch grids: view order, then raster order; see :func:`collect_features`).
For each x_i not yet *claimed*, let J_i = {j : cos(x_i, x_j) >= theta}. If no member of J_i
is claimed, x_i is **kept** and every member of J_i becomes claimed; otherwise x_i is skipped.
The bank is the kept rows in their **raw** (un-normalised) form, in walk order.

Numerical conventions (shared by the fast path and its slow twin):
  * "cos >= theta" is evaluated as ``cos >= theta - tol`` with ``tol = 64 * eps`` of the
    compute dtype (7.6e-6 in float32), so theta = 1.0 really means "dedupe only": exact
    duplicates match despite rounding. Every x_i is a member of its own J_i.
  * half / bfloat16 inputs are computed in float32. Fast path and reference agree exactly
    unless a cosine lies within rounding (~1e-7 in float32) of the threshold, where the
    matrix-matrix and matrix-vector products may round differently; in float64 they agree.
  * all-zero or non-finite rows are refused (they have no direction): drop them first, as
    :func:`collect_features` does.

Memory: :func:`build_psc` handles ``chunk_size`` candidates at a time against all n vectors,
so its peak is O(chunk_size * n) (about 5 bytes per entry), not O(n^2). Time is O(n^2 d).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from m3_core.errors import InvalidInputError


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def match_tolerance(dtype: torch.dtype) -> float:
    """Slack subtracted from theta: 64 machine epsilons of the compute dtype."""
    return 64.0 * torch.finfo(dtype).eps


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


def _normalize(features: torch.Tensor) -> torch.Tensor:
    x = features.to(_compute_dtype(features))
    return x / x.norm(dim=1, keepdim=True)  # rows are non-zero (checked)


def build_psc_reference(
    features: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow twin of :func:`build_psc`: the plain loop of Algorithm 1 (O(n^2 d), O(n) memory)."""
    _check_features(features, "features")
    threshold = _check_threshold(threshold)
    x = _normalize(features)  # [n, d]
    thr = threshold - match_tolerance(x.dtype)
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


def _neighbours(x: torch.Tensor, rows: torch.Tensor, thr: float) -> torch.Tensor:
    """J of the given rows: bool [c, n], ``cos >= thr`` and every row its own member."""
    adj = (x[rows] @ x.T) >= thr  # [c, n]
    adj[torch.arange(rows.numel(), device=x.device), rows] = True
    return adj


def _greedy_rows(block: np.ndarray) -> np.ndarray:
    """Sequential part of Algorithm 1 on a bool block [r, u] of candidate rows x columns.

    Returns the kept-row mask [r]. No column of ``block`` is claimed on entry.
    """
    claimed = np.zeros(block.shape[1], dtype=bool)
    keep = np.zeros(block.shape[0], dtype=bool)
    for r in range(block.shape[0]):
        row = block[r]
        if not (row & claimed).any():
            keep[r] = True
            claimed |= row
    return keep


def subsample_indices(
    n: int, max_inputs: int | None, generator: torch.Generator | None
) -> torch.Tensor | None:
    """Sorted random subset of ``range(n)`` of size ``max_inputs`` (None when n fits).

    Sorting keeps the walk in view / raster order. ``generator=None`` means a CPU generator
    seeded with 0, so the result is reproducible by default.
    """
    if max_inputs is None or n <= max_inputs:
        return None
    if int(max_inputs) < 1:
        raise InvalidInputError(f"max_inputs must be positive, got {max_inputs}")
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 over ``features`` [n, d] -> (bank [t, d] raw rows, kept_indices [t] long).

    Exactly the rule of :func:`build_psc_reference` (see the module doc), computed
    ``chunk_size`` candidates at a time: peak extra memory is about 5 * chunk_size * n bytes.
    The similarity products run on ``features.device``; the short sequential tie-break per
    chunk runs on the CPU.

    ``max_inputs`` (ours, not in M3): if n > max_inputs, Algorithm 1 runs on a random subset
    of ``max_inputs`` rows drawn with ``generator`` (default: seeded with 0) and kept in their
    original order; ``kept_indices`` always index the rows of the full ``features``.
    """
    _check_features(features, "features")
    threshold = _check_threshold(threshold)
    if int(chunk_size) < 1:
        raise InvalidInputError(f"chunk_size must be positive, got {chunk_size}")
    chunk_size = int(chunk_size)
    sub = subsample_indices(features.shape[0], max_inputs, generator)
    if sub is not None:
        bank, kept = build_psc(features[sub.to(features.device)], threshold, chunk_size=chunk_size)
        idx = sub.to(features.device)[kept]
        return features[idx], idx

    x = _normalize(features)  # [n, d]
    thr = threshold - match_tolerance(x.dtype)
    n = x.shape[0]
    claimed = torch.zeros(n, dtype=torch.bool, device=x.device)  # [n]
    kept_parts: list[torch.Tensor] = []
    pos = 0
    while pos < n:
        # The next chunk_size rows that are still unclaimed (claimed rows are skipped by the
        # rule, so their similarities are never computed).
        rows = (~claimed[pos:]).nonzero().squeeze(1)[:chunk_size] + pos  # [c] ascending
        if rows.numel() == 0:
            break
        pos = int(rows[-1]) + 1
        adj = _neighbours(x, rows, thr)  # [c, n] J of each row of the chunk
        # Claims only grow: a row whose J already touches a claim is out.
        cand = (~(adj & claimed).any(dim=1)).nonzero().squeeze(1)  # [r]
        if cand.numel() == 0:
            continue
        sub_adj = adj[cand]  # [r, n]
        del adj
        cols = sub_adj.any(dim=0).nonzero().squeeze(1)  # [u] none claimed (checked above)
        block = sub_adj[:, cols].cpu().numpy()  # [r, u]
        keep = torch.from_numpy(_greedy_rows(block)).to(x.device)  # [r]
        claimed |= sub_adj[keep].any(dim=0)
        kept_parts.append(rows[cand[keep]])
    idx = torch.cat(kept_parts) if kept_parts else torch.zeros(0, dtype=torch.long)
    idx = idx.to(device=features.device, dtype=torch.long)
    return features[idx], idx


def extend_psc_reference(
    bank: torch.Tensor, new_features: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow twin of :func:`extend_psc`: one new feature at a time against the growing bank."""
    _check_extend(bank, new_features)
    threshold = _check_threshold(threshold)
    rows = [_normalize(bank)] if bank.shape[0] else []
    dtype = _compute_dtype(new_features if bank.shape[0] == 0 else bank)
    thr = threshold - match_tolerance(dtype)
    x = _normalize(new_features).to(dtype)
    added: list[int] = []
    for i in range(x.shape[0]):
        if rows and bool(((torch.cat(rows) @ x[i]) >= thr).any()):
            continue
        added.append(i)
        rows.append(x[i : i + 1])
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
    appended earlier in this call, has cosine >= theta with it (same tolerance as
    :func:`build_psc`). Existing rows never move, so earlier bank indices stay valid.
    Peak memory O(chunk_size * (t + n)).
    """
    _check_extend(bank, new_features)
    threshold = _check_threshold(threshold)
    if int(chunk_size) < 1:
        raise InvalidInputError(f"chunk_size must be positive, got {chunk_size}")
    dtype = _compute_dtype(new_features if bank.shape[0] == 0 else bank)
    thr = threshold - match_tolerance(dtype)
    bank_n = _normalize(bank).to(dtype) if bank.shape[0] else bank.to(dtype)  # [t, d]
    x = _normalize(new_features).to(dtype)  # [n, d]
    added_parts: list[torch.Tensor] = []
    for start in range(0, x.shape[0], int(chunk_size)):
        xc = x[start : start + int(chunk_size)]  # [c, d]
        free = ~((xc @ bank_n.T) >= thr).any(dim=1)  # [c] far from every bank row
        cand = free.nonzero().squeeze(1)  # [r]
        if cand.numel() == 0:
            continue
        near = ((xc[cand] @ xc[cand].T) >= thr).cpu().numpy()  # [r, r]
        keep = np.zeros(cand.numel(), dtype=bool)
        for r in range(cand.numel()):  # a candidate is blocked by an earlier added one
            keep[r] = not (near[r, :r] & keep[:r]).any()
        sel = cand[torch.from_numpy(keep).to(cand.device)]
        bank_n = torch.cat([bank_n, xc[sel]])
        added_parts.append(sel + start)
    idx = torch.cat(added_parts) if added_parts else torch.zeros(0, dtype=torch.long)
    idx = idx.to(device=new_features.device, dtype=torch.long)
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
