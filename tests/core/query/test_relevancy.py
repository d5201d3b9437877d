"""Relevancy: known embeddings -> known scores; the cached scorer equals the definitions."""

from __future__ import annotations

import math

import pytest
import torch

from m3_core.errors import InvalidInputError
from m3_core.query.relevancy import (
    RelevancyConfig,
    RelevancyScorer,
    relevancy_closed,
    relevancy_open,
    vocabulary_top_k,
)

E = torch.eye(4)  # e0..e3


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_open_matches_hand_computed_lerf_scores():
    # feature 0 = e0 (the query), feature 1 = e1 (something else), feature 2 between both.
    feats = torch.stack([E[0], E[1], (E[0] + E[1]) / 2**0.5]) * 3.0  # norm must not matter
    negs = torch.stack([E[2], (E[0] + E[1] + E[2]) / 3**0.5])  # cos with e0: 0, 1/sqrt3
    r = relevancy_open(feats, E[0], negs, temperature=0.1)
    c = 1 / 3**0.5
    expected = torch.tensor(
        [
            min(sig((1 - 0) / 0.1), sig((1 - c) / 0.1)),
            min(sig((0 - 0) / 0.1), sig((0 - c) / 0.1)),
            min(sig((2**-0.5 - 0) / 0.1), sig((2**-0.5 - 2 * c / 2**0.5) / 0.1)),
        ]
    )
    torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-6)
    assert r[0] > 0.98 and r[1] < 0.01  # the query scores high, an unrelated feature low


def test_closed_matches_hand_computed_top_k_ranks():
    vocab = E[:3]  # three classes: k = 1, the query must beat every other entry
    feats = torch.stack([E[0], E[1], E[3]]) * 2.0  # class 0, class 1, none of them
    r = relevancy_closed(feats, E[0], vocab, temperature=0.1)
    torch.testing.assert_close(r, torch.tensor([sig(10), sig(-10), 0.5]), rtol=1e-5, atol=1e-7)
    # k = 2: beating all but one other entry is enough (feature e1: e0 ties e2 behind e1)
    r2 = relevancy_closed(feats, E[0], vocab, temperature=0.1, k=2)
    torch.testing.assert_close(r2, torch.tensor([sig(10), 0.5, 0.5]), rtol=1e-5, atol=1e-7)
    # a query that is not a vocabulary row is compared with the k-th best row
    r3 = relevancy_closed(E[3][None], E[3], vocab, temperature=0.1)
    torch.testing.assert_close(r3, torch.tensor([sig(10)]), rtol=1e-5, atol=1e-7)


def test_top_k_is_half_a_percent_of_the_vocabulary():
    assert [vocabulary_top_k(n) for n in (2, 20, 199, 200, 1000, 2000)] == [1, 1, 1, 1, 5, 10]


@pytest.mark.parametrize("closed,size", [(False, 7), (True, 7), (True, 1000)])
@pytest.mark.parametrize("member", [False, True])
def test_scorer_equals_definition(closed: bool, size: int, member: bool):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(1000, 32, generator=g) * torch.rand(1000, 1, generator=g)  # [N, d]
    others = torch.randn(size, 32, generator=g)
    text = others[2] * 5.0 if member else torch.randn(32, generator=g)
    kw = {"vocabulary": others} if closed else {"negatives": others}
    scorer = RelevancyScorer(feats, temperature=0.07, chunk=300, half_queries=False, **kw)
    fn = relevancy_closed if closed else relevancy_open
    want = fn(feats, text, others, 0.07)
    got = scorer(text)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (1000,) and float(got.min()) >= 0.0 and float(got.max()) <= 1.0
    # the fast path: float16 features for the per-query product (cosine error ~1e-3 at most,
    # i.e. logits off by ~1e-3 / 0.07; scores stay within 1e-2)
    fast = RelevancyScorer(feats, temperature=0.07, chunk=300, half_queries=True, **kw)(text)
    torch.testing.assert_close(fast, want, rtol=0, atol=1e-2)


def test_closed_scores_above_half_for_exactly_the_top_k_entries():
    g = torch.Generator().manual_seed(2)
    vocab, feats = torch.randn(400, 8, generator=g), torch.randn(50, 8, generator=g)  # k = 2
    scorer = RelevancyScorer(feats, vocabulary=vocab, temperature=0.2, half_queries=False)
    above = torch.stack([scorer(vocab[j]) > 0.5 for j in range(400)], dim=1)  # [50, 400]
    top2 = (feats @ vocab.T / vocab.norm(dim=1)).topk(2, dim=1).indices
    assert above.sum(1).tolist() == [2] * 50
    assert torch.equal(above.nonzero()[:, 1].reshape(50, 2).sort(1).values, top2.sort(1).values)


def test_scores_comparable_across_queries():
    """Each query gets 'its' feature scored the same, however its raw cosines are offset."""
    base = torch.tensor([0.0, 0.0, 0.0, 1.0])
    feats = torch.stack([E[0] + 2 * base, E[1] + 2 * base])  # both share a big common part
    negs = base[None]
    r0 = relevancy_open(feats, E[0] + 2 * base, negs)
    r1 = relevancy_open(feats, E[1] + 2 * base, negs)
    torch.testing.assert_close(r0.flip(0), r1)


def test_bad_input_is_refused():
    with pytest.raises(InvalidInputError):
        relevancy_open(torch.zeros(3, 4), torch.zeros(5), torch.zeros(2, 4))
    with pytest.raises(InvalidInputError):
        relevancy_closed(torch.zeros(3, 4), torch.zeros(4), torch.zeros(0, 4))
    with pytest.raises(InvalidInputError, match="one entry"):  # nothing to rank against
        relevancy_closed(torch.ones(3, 4), E[0], E[:1])
    with pytest.raises(InvalidInputError, match="one entry"):
        RelevancyScorer(torch.ones(3, 4), vocabulary=E[:1])(E[0])
    with pytest.raises(InvalidInputError):
        RelevancyScorer(torch.zeros(3, 4), negatives=torch.ones(1, 4), vocabulary=torch.ones(1, 4))
    with pytest.raises(InvalidInputError):
        RelevancyScorer(torch.zeros(3, 4), negatives=torch.ones(1, 4), temperature=0.0)
    with pytest.raises(InvalidInputError):
        RelevancyScorer(torch.zeros(3, 4), negatives=torch.ones(1, 4))(torch.ones(5))
    with pytest.raises(InvalidInputError):
        RelevancyConfig(temperature=-1.0)
    with pytest.raises(InvalidInputError):
        RelevancyConfig(negatives=("object", " "))
