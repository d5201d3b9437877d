"""Queries fitted through GMA: the sparse softmax twin, never worse than least squares."""

from __future__ import annotations

import torch

from m3_core.live.fit import (
    decode_cosine,
    fit_queries,
    least_squares_queries,
    principal_projection,
    sparse_gma,
)
from m3_core.memory.gma import gma_decode


def _bank_and_targets(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(12, 16, generator=g), dim=-1)
    bank = centres.repeat(20, 1) + 0.25 * torch.randn(240, 16, generator=g)  # [240, 16]
    label = torch.randint(0, 12, (300,), generator=g)
    targets = centres[label] + 0.05 * torch.randn(300, 16, generator=g)
    return centres, bank, label, targets


def test_sparse_gma_with_every_row_is_gma():
    _, bank, _, targets = _bank_and_targets()
    w = principal_projection(bank, 8)
    q = least_squares_queries(targets, w)
    p_t = w @ torch.nn.functional.normalize(bank, dim=-1).T
    got = sparse_gma(q, w, p_t, bank, 0.05, bank.shape[0])
    torch.testing.assert_close(got, gma_decode(q, w, bank, 0.05), atol=1e-5, rtol=1e-4)


def test_fitted_queries_decode_to_their_targets():
    """With s = 8 < d = 16 least squares alone cannot reach every target; the Adam polish
    (sparse softmax) raises the mean cosine, never lowers a single one, and every decoded
    feature is nearest to its own label."""
    centres, bank, label, targets = _bank_and_targets()
    w = principal_projection(bank, 8)
    q0 = least_squares_queries(targets, w)
    cos0 = decode_cosine(q0, targets, w, bank, 0.05)
    q, cos = fit_queries(targets, w, bank, 0.05, steps=10, lr=0.1, topk=32)
    torch.testing.assert_close(cos, decode_cosine(q, targets, w, bank, 0.05))
    assert bool((cos >= cos0 - 1e-6).all())
    assert float(cos.mean()) > float(cos0.mean()) + 0.005
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(300))
    decoded = gma_decode(q, w, bank, 0.05)
    assert bool(((decoded @ centres.T).argmax(-1) == label).all())


def test_principal_projection_spans_the_features():
    x = torch.randn(50, 4) @ torch.randn(4, 10)  # rank 4 in 10-d
    w = principal_projection(x, 6, generator=torch.Generator().manual_seed(0))
    assert w.shape == (6, 10)
    proj = w[:4].T @ torch.linalg.pinv(w[:4].T)  # projector onto the top-4 row space
    torch.testing.assert_close(x @ proj, x, atol=1e-4, rtol=1e-4)
