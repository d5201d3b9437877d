"""Exact ``cos >= thr`` matching for PSC: fast products, exact decisions, a cluster prefilter.

The rule is decided in float64 (``exact_cos``); the products that find the matches run in
float32 (or bfloat16 for the cluster prefilter), and every pair whose fast value lies within
that product's proven rounding bound of ``thr`` is recomputed in float64 (:func:`decide`).
So the fast path and the float64 plain loop keep the same rows, on any device.

Rounding bounds (u = unit roundoff, eps = 2u; rows normalised to unit length):
  * float32: normalising costs <= (d/2 + 2) u per row and the dot product <= d u (Higham's
    gamma_d), so |fast - exact| <= (d + 2) eps32; :func:`product_error` doubles it.
  * bfloat16 (8-bit significand, float32 accumulation): rounding both inputs <= 2 u_bf + u_bf^2,
    rounding the output <= u_bf, plus the float32 terms. A float32 matmul precision other
    than "highest" (TF32 / bf16 inside float32 matmuls) is charged the bfloat16 bound.

Prefilter (:class:`ClusterIndex`): spherical k-means centres c_B with angular radius r_B (an
upper bound on the angle of any member to c_B). By the triangle inequality for angles, row i
has no match in cluster B if angle(x_i, c_B) > acos(thr) + r_B; with the product bound the
test is ``fast cos(x_i, c_B) < cos(acos(thr) + r_B) - bound``. Clusters only change the speed,
never the result: a bad clustering just prunes less.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

EPS32 = torch.finfo(torch.float32).eps
U_BF16 = 2.0**-8


def product_error(d: int, dtype: torch.dtype) -> float:
    """Bound on |fast cos - exact cos| for unit rows of dimension d multiplied in ``dtype``."""
    err = 2.0 * (d + 2) * EPS32
    if dtype == torch.bfloat16 or torch.get_float32_matmul_precision() != "highest":
        err += 3.0 * U_BF16 + U_BF16**2
    elif torch.cuda.is_available() and torch.backends.cuda.matmul.allow_tf32:
        err += 3.0 * 2.0**-11
    return err


def unit_rows(features: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows scaled to unit length (rows are non-zero), computed in float64 for float64 input."""
    x = features.to(torch.float64 if features.dtype == torch.float64 else torch.float32)
    return (x / x.norm(dim=1, keepdim=True)).to(dtype)


def exact_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """float64 cosine of paired raw rows a [p, d], b [p, d] -> [p]."""
    a, b = unit_rows(a, torch.float64), unit_rows(b, torch.float64)
    return (a * b).sum(dim=1)


def decide(
    sim: torch.Tensor,
    thr: float,
    bound: float,
    exact: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """bool [r, m]: exact cos >= thr, from fast similarities ``sim`` [r, m] with |error| < bound.

    ``exact(ia, jb)`` gives the float64 cosines of the listed (row, column) pairs of ``sim``.
    """
    out = sim >= thr + bound
    near = (sim >= thr - bound) & ~out
    if bool(near.any()):
        ia, jb = near.nonzero(as_tuple=True)
        out[ia, jb] = exact(ia, jb) >= thr
    return out


def fast_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where matmuls in it are fast (CUDA, CPUs with AVX512-BF16/AMX), else float32."""
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return torch.bfloat16
    return torch.float32


def _argmax_cos(x: torch.Tensor, centres: torch.Tensor, rows: int) -> torch.Tensor:
    """Index of the most similar centre for every row of x [n, d] -> [n] long."""
    c = centres.to(x.dtype)
    return torch.cat([(x[s : s + rows] @ c.T).argmax(dim=1) for s in range(0, x.shape[0], rows)])


def _farthest(x: torch.Tensor, ref: torch.Tensor, group: torch.Tensor, k: int) -> torch.Tensor:
    """Per group g < k, the row of x [m, d] least similar to ref [k, d] -> [k] row indices
    (groups without rows get index 0; callers use only non-empty ones)."""
    sim = (x * ref[group]).sum(dim=1)  # [m]
    low = torch.full((k,), math.inf, device=x.device).scatter_reduce(0, group, sim, "amin")
    is_low = sim <= low[group]  # [m]
    rows = torch.arange(x.shape[0], device=x.device)
    return torch.zeros(k, dtype=torch.long, device=x.device).scatter_(
        0, group[is_low], rows[is_low]
    )


def _split(
    x: torch.Tensor, centres: torch.Tensor, assign: torch.Tensor, wide: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split every cluster marked in ``wide`` [k] in two by 2-means, seeded with its farthest
    member and the member farthest from that one -> (centres [k + w, d], assign [n])."""
    k = centres.shape[0]
    new_id = torch.full((k,), -1, dtype=torch.long, device=x.device)
    new_id[wide] = torch.arange(int(wide.sum()), device=x.device) + k
    mem = wide[assign].nonzero().squeeze(1)  # [m] rows of wide clusters
    xm, grp = x[mem], assign[mem]  # [m, d], [m]
    s1 = xm[_farthest(xm, unit_rows(centres), grp, k)]  # [k, d]
    s2 = xm[_farthest(xm, s1, grp, k)]  # [k, d]
    for _ in range(3):
        side = (xm * s2[grp]).sum(1) > (xm * s1[grp]).sum(1)  # [m] True: the new half
        sums1 = torch.zeros_like(s1).index_add_(0, grp[~side], xm[~side])
        sums2 = torch.zeros_like(s2).index_add_(0, grp[side], xm[side])
        ok1, ok2 = sums1.norm(dim=1) > 0, sums2.norm(dim=1) > 0
        s1[ok1], s2[ok2] = unit_rows(sums1[ok1]), unit_rows(sums2[ok2])
    side = (xm * s2[grp]).sum(1) > (xm * s1[grp]).sum(1)
    assign = assign.clone()
    assign[mem[side]] = new_id[grp[side]]
    centres = torch.cat([torch.where(wide[:, None], s1, centres), s2[wide]])
    # drop halves left empty
    used, assign = torch.unique(assign, return_inverse=True)
    return centres[used], assign


class ClusterIndex:
    """Rows of ``x`` [n, d] (unit, float32) grouped by spherical k-means, with exact radii.

    Attributes: ``order`` [n] row ids sorted by cluster, ``starts`` list of k + 1 offsets into
    ``order``, ``xs`` [n, d] = x[order], ``centres`` [k, d] (fast dtype), ``limit`` [k]: a
    row whose fast cosine to centre B is below ``limit[B]`` has no match in B.

    k-means on a sample, then up to ``split_rounds`` rounds in which every cluster reached by
    more than ``wide`` of a sample of rows (typically two merged groups) is split in two.
    """

    def __init__(
        self,
        x: torch.Tensor,
        thr: float,
        clusters: int,
        *,
        iters: int = 4,
        split_rounds: int = 4,
        wide: float = 0.02,
        generator: torch.Generator | None = None,
        rows: int = 8192,
    ) -> None:
        n, d = x.shape
        k = max(1, min(int(clusters), n))
        self.dtype = fast_dtype(x.device)
        self.bound = product_error(d, self.dtype)
        self.alpha = math.acos(thr) + 1e-9
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        xf = x.to(self.dtype)  # [n, d]
        centres = x[torch.randperm(n, generator=g)[:k].to(x.device)]  # [k, d]
        sample = torch.randperm(n, generator=g)[: min(n, 16 * k)].to(x.device)
        xs, xfs = x[sample], xf[sample]
        for _ in range(iters):  # spherical k-means on a sample; empty clusters keep their centre
            a = _argmax_cos(xfs, centres, rows)
            sums = torch.zeros_like(centres).index_add_(0, a, xs)
            live = sums.norm(dim=1) > 0
            centres[live] = unit_rows(sums[live])
        assign = _argmax_cos(xf, centres, rows)  # [n]
        used, assign = torch.unique(assign, return_inverse=True)
        centres = centres[used]  # [k', d]
        probe = xf[sample[:2048]]  # [s, d]
        for _ in range(split_rounds):
            self._bounds(x, centres, assign)
            hit = (self.reach(probe).float().mean(dim=0) > wide) & (self.sizes >= 4)  # [k]
            if not bool(hit.any()):
                break
            centres, assign = _split(x, centres, assign, hit)
        else:
            self._bounds(x, centres, assign)
        self.order = torch.argsort(assign, stable=True)  # [n]
        self.starts = torch.cat([self.sizes.new_zeros(1), torch.cumsum(self.sizes, 0)])  # [k+1]
        self.xs = x[self.order]  # [n, d]

    def _bounds(self, x: torch.Tensor, centres: torch.Tensor, assign: torch.Tensor) -> None:
        """Centres, sizes, radii and pruning limits for an assignment [n] of the rows x."""
        k = centres.shape[0]
        centres = unit_rows(centres)  # [k, d]
        # angle of each row to its centre, rounded up by the float32 product bound
        own = (x * centres[assign]).sum(dim=1)  # [n]
        b32 = product_error(x.shape[1], torch.float32)
        ang = torch.arccos((own.double() - b32).clamp(-1.0, 1.0))  # [n]
        radius = torch.zeros(k, dtype=torch.float64, device=x.device)
        radius = radius.scatter_reduce(0, assign, ang, "amax", include_self=True)  # [k]
        reach = self.alpha + radius  # [k]
        limit = torch.cos(reach) - self.bound
        limit[reach >= math.pi] = -math.inf
        self.limit = limit.float()  # [k]
        self.centres = centres.to(self.dtype)  # [k, d]
        self.sizes = torch.bincount(assign, minlength=k)  # [k]

    @property
    def k(self) -> int:
        return self.centres.shape[0]

    def reach(self, xc: torch.Tensor) -> torch.Tensor:
        """bool [c, k]: clusters that may hold a match of each row of xc [c, d] (unit)."""
        sim = (xc.to(self.dtype) @ self.centres.T).float()  # [c, k]
        return sim >= self.limit

    def _pairs(self, x: torch.Tensor, step: int, budget: int) -> tuple[torch.Tensor, ...] | None:
        """(row, cluster) pairs the bound leaves -> (rows [p], clusters [p]); None past budget."""
        parts, cost = [], 0
        for s in range(0, x.shape[0], step):
            rb, cb = self.reach(x[s : s + step]).nonzero(as_tuple=True)
            cost += int(self.sizes[cb].sum())
            if cost > budget:
                return None
            parts.append(torch.stack([rb + s, cb]))
        rb, cb = torch.cat(parts, dim=1)
        return rb, cb

    def graph(
        self,
        x: torch.Tensor,
        thr: float,
        bound: float,
        exact: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        block_entries: int = 1 << 24,
        max_entries: int | None = None,
        max_pairs: int = 1 << 25,
        piece: int = 128,
        batch_rows: int = 16384,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """All matches among the rows of x [n, d] -> (row [e], col [e]), or None when the
        clusters prune too little (more than ``max_entries`` products; default n^2 / 4) or
        the rows match too much (more than ``max_pairs`` matches, 16 bytes each: large groups
        of near-identical rows, which the dense walk claims a chunk at a time instead).

        Every (row, cluster) pair the bound cannot rule out is computed. Clusters are cut in
        pieces of at most ``piece`` members (a piece keeps its cluster's bound); pieces with
        similar numbers of reaching rows are batched into one padded ``bmm`` of at most
        ``batch_rows`` gathered rows. ``exact(rows, cols)`` gives float64 cosines.
        """
        n, dev = x.shape[0], x.device
        budget = n * n // 4 if max_entries is None else int(max_entries)
        found = self._pairs(x, max(1, block_entries // self.k), budget)
        if found is None:
            return None
        rb, cb = found  # [p], [p]
        # pieces: cluster b has ceil(size / piece) of them; piece q holds xs[p_lo[q]:p_hi[q]]
        npc = (self.sizes + piece - 1) // piece  # [k]
        first = torch.cumsum(npc, 0) - npc  # [k] id of each cluster's first piece
        rep = npc[cb]
        rb, cb = torch.repeat_interleave(rb, rep), torch.repeat_interleave(cb, rep)  # [p']
        pc = first[cb] + _ramp(rep)  # [p'] piece id
        p_of = torch.repeat_interleave(torch.arange(self.k, device=dev), npc)  # [q] cluster
        p_lo = self.starts[p_of] + piece * _ramp(npc)  # [q]
        p_hi = torch.minimum(p_lo + piece, self.starts[p_of + 1])  # [q]
        # pieces by number of reaching rows, descending; pairs grouped in that order
        cnt = torch.bincount(pc, minlength=p_lo.numel())  # [q]
        by_cnt = torch.argsort(cnt, descending=True, stable=True)  # [q]
        rank = torch.empty_like(by_cnt)
        rank[by_cnt] = torch.arange(by_cnt.numel(), device=dev)
        o = torch.argsort(rank[pc], stable=True)
        rb, slot_all = rb[o], rank[pc[o]]  # [p'] pair rows and their piece's rank
        cnt_s = cnt[by_cnt]  # [q] descending
        w_all = _ramp(cnt_s)  # [p'] index of each pair within its piece
        at = torch.cat([cnt_s.new_zeros(1), torch.cumsum(cnt_s, 0)]).tolist()  # [q + 1]
        cnt_l = cnt_s.tolist()
        lane = torch.arange(piece, device=dev)
        out_r, out_c = [], []
        s, total = 0, 0
        while s < len(cnt_l) and cnt_l[s] > 0:
            r_max = min(cnt_l[s], batch_rows, max(1, block_entries // piece))
            g = max(1, min(batch_rows // r_max, block_entries // (r_max * piece)))
            g = min(g, len(cnt_l) - s)
            pieces = by_cnt[s : s + g]  # [g]
            mem = p_lo[pieces][:, None] + lane  # [g, piece] positions in xs
            mvalid = mem < p_hi[pieces][:, None]
            mem = torch.where(mvalid, mem, p_lo[pieces][:, None])
            cols = self.order[mem]  # [g, piece] global ids
            xm = self.xs[mem].transpose(1, 2)  # [g, d, piece]
            a, b = at[s], at[s + g]
            for r0 in range(0, cnt_l[s], r_max):  # a piece with more rows: in slices
                w = w_all[a:b] - r0
                sel = (w >= 0) & (w < r_max)
                slot, w = slot_all[a:b][sel] - s, w[sel]
                rows = torch.zeros(g, r_max, dtype=torch.long, device=dev)
                valid = torch.zeros(g, r_max, dtype=torch.bool, device=dev)
                rows[slot, w] = rb[a:b][sel]
                valid[slot, w] = True
                sim = torch.bmm(x[rows], xm)  # [g, r, piece]
                sim[~(valid[:, :, None] & mvalid[:, None, :])] = -2.0  # padding never matches
                rows, sim = rows.view(-1), sim.view(g * r_max, piece)

                def col(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
                    return cols[i // r_max, j]  # noqa: B023

                hit = decide(sim, thr, bound, lambda i, j: exact(rows[i], col(i, j)))  # noqa: B023
                i, j = hit.nonzero(as_tuple=True)
                total += i.numel()
                if total > max_pairs:
                    return None
                out_r.append(rows[i])
                out_c.append(col(i, j))
            s += g
        if not out_r:
            empty = torch.zeros(0, dtype=torch.long, device=dev)
            return empty, empty
        return torch.cat(out_r), torch.cat(out_c)


def _ramp(counts: torch.Tensor) -> torch.Tensor:
    """0, 1, .., c_0 - 1, 0, 1, .., c_1 - 1, ... for counts [m] -> [sum(counts)]."""
    ends = torch.cumsum(counts, 0)
    return torch.arange(int(ends[-1]) if counts.numel() else 0, device=counts.device) - (
        torch.repeat_interleave(ends - counts, counts)
    )
