"""Principal queries fitted per Gaussian so that GMA decodes to its lifted feature.

No rasterisation: each Gaussian's query q [s] is fitted alone to its target feature f [d]
(the lifted feature of :mod:`m3_core.live.lift`) through the model's GMA
(:func:`m3_core.memory.gma.gma_decode` with projection W [s, d], PSC bank B [t, d], tau)::

    q0 = f_hat W^+                   least squares: q0 W is f_hat's projection on W's row space
    q <- Adam steps on 1 - cos(GMA_k(q), f)  (the losses of different Gaussians are separate,
                                              and Adam is element-wise: per-Gaussian steps)

GMA_k is GMA with each query's softmax restricted to its ``topk`` largest logits (all t
logits cost s per row, the restricted output and its gradient k (s + d) instead of t (s + d));
with tau = 0.05 the rows left out carry weights below e^-20 or so once a fit is any good. The
best iterate per Gaussian is kept (never worse than the start, by the exact GMA), and rows are
returned with unit norm (GMA depends only on the direction of q W, and equal norms keep
rendered query maps, sum_i q_i alpha_i T_i, from being dominated by a few Gaussians).
"""

from __future__ import annotations

import torch

from m3_core.memory.gma import gma_decode


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def decode_cosine(
    q: torch.Tensor, targets: torch.Tensor, proj: torch.Tensor, bank: torch.Tensor, tau: float
) -> torch.Tensor:  # [n]
    """cos(GMA(q), target) per row."""
    if q.shape[0] == 0:
        return q.new_zeros(0)
    return (_unit(gma_decode(q, proj, bank, tau)) * _unit(targets)).sum(-1)


def least_squares_queries(targets: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:  # [n, s]
    """q0 = f_hat W^+ (module doc), unit rows."""
    return _unit(_unit(targets) @ torch.linalg.pinv(proj.double()).float())


def fit_queries(
    targets: torch.Tensor,  # [n, d]
    proj: torch.Tensor,  # [s, d]
    bank: torch.Tensor,  # [t, d]
    tau: float,
    *,
    init: torch.Tensor | None = None,  # [n, s] warm start (None: least squares)
    steps: int = 10,
    lr: float = 0.1,
    topk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:  # (queries [n, s] unit rows, cosine [n])
    """Fit queries to ``targets`` (module doc); returns them with the cosine each reaches."""
    proj, bank = proj.detach().float(), bank.detach().float()
    target = _unit(targets.detach().float())
    q0 = least_squares_queries(target, proj) if init is None else _unit(init.detach().float())
    cos0 = decode_cosine(q0, target, proj, bank, tau)
    if steps <= 0 or target.shape[0] == 0:
        return q0, cos0
    p_t = proj @ _unit(bank).T  # [s, t]: logits u = q P / ||q W||
    k = min(int(topk), bank.shape[0])
    best_q, best_cos = q0.clone(), torch.full_like(cos0, -2.0)
    q = torch.nn.Parameter(q0.clone())
    opt = torch.optim.Adam([q], lr=float(lr))
    with torch.enable_grad():
        for _ in range(int(steps) + 1):
            opt.zero_grad(set_to_none=True)
            cos = (_unit(sparse_gma(q, proj, p_t, bank, tau, k)) * target).sum(-1)  # [n]
            with torch.no_grad():  # cos belongs to q before this step
                better = cos.detach() > best_cos
                best_q[better] = q.detach()[better]
                best_cos = torch.where(better, cos.detach(), best_cos)
            if _ == steps:
                break
            (1.0 - cos).sum().backward()
            opt.step()
            with torch.no_grad():
                q.copy_(_unit(q))  # stay on the sphere: Adam's step size is then relative
    best_q = _unit(best_q)
    exact = decode_cosine(best_q, target, proj, bank, tau)
    worse = exact < cos0  # the exact GMA decides: never return a worse fit than the start
    return torch.where(worse[:, None], q0, best_q), torch.where(worse, cos0, exact)


def sparse_gma(
    q: torch.Tensor, proj: torch.Tensor, p_t: torch.Tensor, bank: torch.Tensor, tau: float, k: int
) -> torch.Tensor:  # [n, d]
    """GMA of q [n, s] with each softmax over its k largest logits (``p_t`` = W Bn^T [s, t])."""
    norm = (q @ proj).norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [n, 1]
    with torch.no_grad():
        idx = torch.topk(q.detach() @ p_t, k, dim=-1).indices  # [n, k]
    cols = p_t.T[idx]  # [n, k, s]
    u = torch.einsum("ns,nks->nk", q, cols)  # [n, k]
    a = torch.softmax(u / (norm * tau), dim=-1)
    return torch.einsum("nk,nkd->nd", a, bank[idx])


def principal_projection(
    features: torch.Tensor, channels: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:  # [s, d]
    """A projection W [s, d] whose row space holds the top-s principal directions of the unit
    ``features`` [n, d] (uncentred: directions are what GMA compares), rows of norm sqrt(d)
    like N(0, 1) rows. With s >= d (or fewer rows than s), the missing rows are N(0, 1)."""
    x = _unit(features.detach().float())
    d = x.shape[1]
    k = min(channels, d, x.shape[0])
    rows = torch.linalg.svd(x, full_matrices=False).Vh[:k] if k else x.new_zeros(0, d)
    extra = torch.randn(channels - k, d, generator=generator).to(x) / d**0.5
    return torch.cat([rows, extra]) * d**0.5
