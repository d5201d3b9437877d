"""Gaussian Memory Attention (GMA): decode a principal-query slice into a model's feature.

For one model m with projection W [s, d] and frozen PSC bank B [t, d] (raw rows)::

    z   = q @ W                                   # [..., d]
    a_k = softmax_k( cos(z, B_k) / tau )          # [..., t]  cos between L2-normalised vectors
    out = sum_k a_k B_k                           # [..., d]  raw (un-normalised) bank rows

Stateless and functional (like gsplat's ops). L2 normalisation follows
``torch.nn.functional.normalize`` (``x / max(||x||, 1e-12)``), also for its gradient.
The bank is treated as a constant: it never receives a gradient.

:func:`gma_decode` processes ``chunk_size`` leading elements at a time with a hand-written
backward that recomputes the attention per chunk, so neither pass holds more than
``chunk_size * t`` attention weights (a single chunk of at most 16M weights, as a training
step's samples, keeps its forward weights for the backward instead); the logits go through
the low-rank ``W @ Bn^T`` [s, t] and the norm of z through ``W W^T`` [s, s], so only
``a @ B`` (forward) and ``grad @ B^T`` (backward) cost d per weight.
:func:`gma_decode_reference` is its slow twin (plain autograd over the whole batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from m3_core.errors import InvalidInputError

_NORM_EPS = 1e-12  # as torch.nn.functional.normalize


def _check(
    q: torch.Tensor, proj: torch.Tensor, bank: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Validate shapes/dtypes/devices; return the bank in q's dtype (detached)."""
    for name, t in (("queries", q), ("projection", proj), ("bank", bank)):
        if not isinstance(t, torch.Tensor):
            raise InvalidInputError(f"GMA {name} must be a tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise InvalidInputError(f"GMA {name} must be floating point, got {t.dtype}")
    if q.dim() < 1:
        raise InvalidInputError("GMA queries must have a channel dimension [..., s]")
    if proj.dim() != 2 or bank.dim() != 2:
        raise InvalidInputError(
            f"GMA projection must be [s, d] and bank [t, d], got {tuple(proj.shape)} "
            f"and {tuple(bank.shape)}"
        )
    if q.shape[-1] != proj.shape[0]:
        raise InvalidInputError(
            f"GMA queries have {q.shape[-1]} channels, the projection expects {proj.shape[0]}"
        )
    if proj.shape[1] != bank.shape[1]:
        raise InvalidInputError(
            f"GMA projection outputs {proj.shape[1]} dims, the bank rows have {bank.shape[1]}"
        )
    if bank.shape[0] == 0:
        raise InvalidInputError("GMA bank is empty (no PSC rows)")
    if q.dtype != proj.dtype:
        raise InvalidInputError(f"GMA queries are {q.dtype} but the projection is {proj.dtype}")
    if not (q.device == proj.device == bank.device):
        raise InvalidInputError(
            f"GMA tensors on different devices: queries {q.device}, projection {proj.device}, "
            f"bank {bank.device}"
        )
    if not float(temperature) > 0:
        raise InvalidInputError(f"GMA temperature must be positive, got {temperature}")
    return bank.detach().to(q.dtype)


def gma_decode_reference(
    q: torch.Tensor, proj: torch.Tensor, bank: torch.Tensor, temperature: float = 0.05
) -> torch.Tensor:
    """Slow twin of :func:`gma_decode`: one un-chunked autograd expression."""
    bank = _check(q, proj, bank, temperature)
    z = q @ proj  # [..., d]
    logits = F.normalize(z, dim=-1) @ F.normalize(bank, dim=-1).T / temperature  # [..., t]
    return torch.softmax(logits, dim=-1) @ bank  # [..., d]


def _attention(
    qc: torch.Tensor, gram: torch.Tensor, p_t: torch.Tensor, tau: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (a [c, t], u [c, t], ||z|| [c, 1]) for a chunk of queries qc [c, s].

    The logits cos(z, B_k) / tau = (z @ Bn^T) / ||z|| / tau are computed as
    (qc @ P) / ||z|| / tau with P = W @ Bn^T [s, t] (s is small: 16), which costs c*s*t
    instead of c*d*t multiply-adds (d = 768..1280), and ||z||^2 = q G q^T with the Gram matrix
    G = W W^T [s, s], so z = q W [c, d] itself is never formed."""
    norm = ((qc @ gram) * qc).sum(-1, keepdim=True).clamp_min(0.0).sqrt()  # [c, 1]
    u = qc @ p_t  # [c, t] = z @ Bn^T
    a = torch.softmax(u / (norm.clamp_min(_NORM_EPS) * tau), dim=-1)  # [c, t]
    return a, u, norm


def _wide(x: torch.Tensor, bank_m: torch.Tensor) -> torch.Tensor:
    """x [c, k] @ bank_m [k, d'] in bank_m's dtype (float32 accumulation), back in x's."""
    return (x.to(bank_m.dtype) @ bank_m).to(x.dtype)


_KEEP_ATTENTION = 16 * 2**20  # forward attention weights kept for backward up to this many


class _GMAChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q2, proj, bank, tau: float, chunk: int, mm_dtype):  # q2 [M, s]
        p_t = proj @ F.normalize(bank, dim=-1).T  # [s, t]
        gram = proj @ proj.T  # [s, s]
        bank_m = bank.to(mm_dtype or bank.dtype)  # the d-wide products' operand
        out = q2.new_empty(q2.shape[0], bank.shape[1])  # [M, d]
        # one chunk whose weights are small enough: keep (a, u, norm) instead of recomputing
        keep = any(ctx.needs_input_grad[:2]) and q2.shape[0] <= chunk
        keep = keep and q2.shape[0] * bank.shape[0] <= _KEEP_ATTENTION
        for a0 in range(0, q2.shape[0], chunk):
            att = _attention(q2[a0 : a0 + chunk], gram, p_t, tau)
            out[a0 : a0 + chunk] = _wide(att[0], bank_m)
        ctx.kept = att if keep else None
        ctx.save_for_backward(q2, proj, bank)
        ctx.tau, ctx.chunk, ctx.mm_dtype = tau, chunk, mm_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # grad_out [M, d]
        q2, proj, bank = ctx.saved_tensors
        tau, chunk = ctx.tau, ctx.chunk
        need_q, need_p = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        bank_n = F.normalize(bank, dim=-1)  # [t, d]
        p_t = proj @ bank_n.T  # [s, t]
        gram = proj @ proj.T  # [s, s]
        bank_mt = bank.to(ctx.mm_dtype or bank.dtype).T  # [d, t]
        dq = torch.empty_like(q2) if need_q else None  # [M, s]
        dp_t = torch.zeros_like(p_t) if need_p else None  # [s, t]
        dp = torch.zeros_like(proj) if need_p else None  # [s, d]
        for a0 in range(0, q2.shape[0], chunk):
            qc, gc = q2[a0 : a0 + chunk], grad_out[a0 : a0 + chunk]
            a, u, norm = ctx.kept if ctx.kept is not None else _attention(qc, gram, p_t, tau)
            da = _wide(gc, bank_mt)  # [c, t] = gc @ bank^T
            n = norm.clamp_min(_NORM_EPS)  # [c, 1]; below eps the norm is a constant
            # softmax backward, dlogit = a (da - sum(a da)) / tau, and du = dlogit / n, in place
            du = da.sub_((da * a).sum(-1, keepdim=True)).mul_(a).mul_(1.0 / (tau * n))  # [c, t]
            dn = -(du * u).sum(-1, keepdim=True) / n  # [c, 1] = -(dlogit u) / n^2
            dz_coef = torch.where(norm > _NORM_EPS, dn / n, torch.zeros_like(dn))  # [c, 1]
            # dz = dz_coef * z (d ||z|| / dz = z / ||z||); through z = q W: dq += dz W^T
            if dq is not None:
                dq[a0 : a0 + chunk] = du @ p_t.T + dz_coef * (qc @ gram)
            if dp is not None:
                dp_t += qc.T @ du
                dp += qc.T @ (dz_coef * (qc @ proj))
        ctx.kept = None
        if dp is not None:
            dp += dp_t @ bank_n  # through P = W @ Bn^T
        return dq, dp, None, None, None, None


def gma_decode(
    q: torch.Tensor,
    proj: torch.Tensor,
    bank: torch.Tensor,
    temperature: float = 0.05,
    *,
    chunk_size: int = 65536,
    matmul_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Decode queries q [..., s] with projection proj [s, d] and PSC bank [t, d] -> [..., d].

    Differentiable with respect to ``q`` and ``proj`` (first order); ``bank`` is constant.
    ``temperature`` is tau (M3: 0.05). Leading elements are processed ``chunk_size`` at a
    time in both passes (peak about ``chunk_size * t`` floats for the attention).
    ``matmul_dtype`` (e.g. ``torch.bfloat16``): the two d-wide products (``a @ B`` forward,
    ``grad @ B^T`` backward; almost all of the work at d = 768..1280) run in it, with float32
    accumulation; the softmax and everything else stay in ``q``'s dtype. None: exact.
    """
    bank = _check(q, proj, bank, temperature)
    if int(chunk_size) < 1:
        raise InvalidInputError(f"GMA chunk_size must be positive, got {chunk_size}")
    lead = q.shape[:-1]
    q2 = q.reshape(-1, q.shape[-1])  # [M, s]
    out = _GMAChunked.apply(
        q2, proj, bank, float(temperature), int(chunk_size), matmul_dtype
    )  # [M, d]
    return out.reshape(*lead, bank.shape[1])


def fast_matmul_dtype(device: torch.device | str) -> torch.dtype | None:
    """bfloat16 where the device multiplies it natively and faster than float32 (a CPU with
    AVX512-BF16 / AMX: 3-4x on GMA's d-wide products here), else None (float32)."""
    if torch.device(device).type != "cpu":
        return None
    has = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return torch.bfloat16 if has is not None and has() else None
