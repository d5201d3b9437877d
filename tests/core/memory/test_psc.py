"""PSC (Algorithm 1): chunked build vs the plain loop, hand examples, extend, collect."""

from __future__ import annotations

import math

import pytest
import torch

from m3_core.errors import InvalidInputError
from m3_core.memory import (
    build_psc,
    build_psc_reference,
    collect_features,
    extend_psc,
    extend_psc_reference,
)

from .conftest import clustered

THRESHOLDS = [0.6, 0.7, 0.8, 0.9, 0.95, 1.0]


def _datasets():
    g = torch.Generator().manual_seed(3)
    rand = torch.randn(600, 16, generator=g, dtype=torch.float64)
    clus = clustered(900, 24, 12, 1.2, seed=4)
    # exact and scaled duplicates (cos == 1 up to rounding)
    dup = torch.cat([clus[:200], clus[50:120] * 3.0, clus[:40]])[torch.randperm(310, generator=g)]
    return {"random": rand, "clustered": clus, "duplicates": dup}


DATA = _datasets()


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_build_matches_reference(kind, threshold):
    x = DATA[kind]
    ref_bank, ref_idx = build_psc_reference(x, threshold)
    for chunk in (1, 37, 256, 10_000):
        bank, idx = build_psc(x, threshold, chunk_size=chunk)
        assert torch.equal(idx, ref_idx), (kind, threshold, chunk)
        assert torch.equal(bank, ref_bank)
    assert torch.equal(ref_bank, x[ref_idx])  # raw rows, walk order
    assert bool((ref_idx[1:] > ref_idx[:-1]).all())


def test_clustered_reduces_and_threshold_orders_bank_size():
    x = DATA["clustered"]
    sizes = [build_psc(x, t)[1].numel() for t in THRESHOLDS]
    assert sizes == sorted(sizes)
    assert sizes[0] < 60 and sizes[-1] == x.shape[0]


def test_invariants_of_algorithm_1():
    """Independent check of the rule: kept vectors have disjoint neighbourhoods; every skipped
    vector has a neighbour claimed by an earlier kept vector (or is claimed itself)."""
    x = DATA["clustered"][:400]
    theta = 0.8
    _, idx = build_psc(x, theta, chunk_size=64)
    xn = torch.nn.functional.normalize(x, dim=1)
    adj = (xn @ xn.T) >= theta - 1e-12  # [n, n]
    adj.fill_diagonal_(True)
    kept = set(idx.tolist())
    for a in idx.tolist():
        for b in idx.tolist():
            if a < b:
                assert not bool((adj[a] & adj[b]).any())
    for i in range(x.shape[0]):
        if i in kept:
            continue
        earlier = [k for k in idx.tolist() if k < i]
        claimed = adj[earlier].any(0) if earlier else torch.zeros(x.shape[0], dtype=torch.bool)
        assert bool((adj[i] & claimed).any())


def test_hand_example_2d():
    ang = torch.tensor([0.0, 10.0, 50.0, 60.0, 20.0], dtype=torch.float64) * math.pi / 180
    x = torch.stack([ang.cos(), ang.sin()], dim=1) * torch.tensor(
        [[1.0], [2.0], [1.0], [5.0], [1.0]]
    )
    theta = math.cos(math.radians(15))
    # 0 deg keeps and claims {0, 10}; 50 deg keeps and claims {50, 60}; 20 deg is unclaimed
    # but its neighbour 10 deg is claimed, so it is skipped.
    for fn in (build_psc, build_psc_reference):
        bank, idx = fn(x, theta)
        assert idx.tolist() == [0, 2]
        assert torch.equal(bank, x[[0, 2]])


def test_threshold_one_dedupes_exactly():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(30, 8, generator=g)  # float32
    order = torch.randint(0, 30, (200,), generator=g)
    x = base[order] * torch.rand(200, 1, generator=g).add(0.5)  # scaled copies: cos == 1
    _, idx = build_psc(x, 1.0, chunk_size=16)
    firsts = sorted({int(order.tolist().index(v)) for v in set(order.tolist())})
    assert idx.tolist() == firsts


def test_float32_and_empty_input():
    x = clustered(300, 16, 5, 0.5, seed=7, dtype=torch.float32)
    bank, idx = build_psc(x, 0.9)
    assert bank.dtype == torch.float32 and idx.dtype == torch.long
    assert torch.equal(bank, x[idx])
    bank, idx = build_psc(torch.zeros(0, 8), 0.8)
    assert bank.shape == (0, 8) and idx.shape == (0,)


def test_max_inputs_subsample():
    x = DATA["clustered"]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    bank, idx = build_psc(x, 0.9, max_inputs=200, generator=g1)
    sub = torch.randperm(x.shape[0], generator=g2)[:200].sort().values
    _, ref = build_psc_reference(x[sub], 0.9)
    assert torch.equal(idx, sub[ref]) and torch.equal(bank, x[idx])
    # reproducible by default, different for another seed, no-op when n fits
    assert torch.equal(build_psc(x, 0.9, max_inputs=200)[1], build_psc(x, 0.9, max_inputs=200)[1])
    other = build_psc(x, 0.9, max_inputs=200, generator=torch.Generator().manual_seed(6))[1]
    assert not torch.equal(other, idx)
    assert torch.equal(build_psc(x, 0.9, max_inputs=10_000)[1], build_psc(x, 0.9)[1])


@pytest.mark.parametrize(
    "bad, kwargs, match",
    [
        (torch.randn(10), {}, "2-D"),
        (torch.tensor([[1.0, float("nan")], [1.0, 2.0]]), {}, "NaN"),
        (torch.tensor([[1.0, 2.0], [0.0, 0.0]]), {}, "all-zero"),
        (torch.randint(0, 3, (4, 2)), {}, "floating"),
        (torch.randn(4, 3), {"threshold": 0.0}, "threshold"),
        (torch.randn(4, 3), {"threshold": 1.5}, "threshold"),
        (torch.randn(4, 3), {"chunk_size": 0}, "chunk_size"),
        (torch.randn(4, 3), {"max_inputs": 0, "threshold": 0.9}, "max_inputs"),
    ],
)
def test_bad_input(bad, kwargs, match):
    before = bad.clone()
    kwargs = {"threshold": 0.8, **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        build_psc(bad, kwargs.pop("threshold"), **kwargs)
    assert torch.equal(bad.nan_to_num(), before.nan_to_num())


# -- extend ---------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.95, 1.0])
def test_extend_matches_reference_and_rule(threshold):
    x = DATA["clustered"]
    bank0, _ = build_psc(x[:300], threshold)
    new = x[300:]
    ref_bank, ref_idx = extend_psc_reference(bank0, new, threshold)
    for chunk in (1, 29, 4096):
        bank, idx = extend_psc(bank0, new, threshold, chunk_size=chunk)
        assert torch.equal(idx, ref_idx) and torch.equal(bank, ref_bank)
    assert torch.equal(ref_bank[: bank0.shape[0]], bank0)  # old rows never move
    assert torch.equal(ref_bank[bank0.shape[0] :], new[ref_idx])
    # rule: an added row is far from everything before it; a rejected one is near something
    bn = torch.nn.functional.normalize(ref_bank, dim=1)
    nn = torch.nn.functional.normalize(new, dim=1)
    t0 = bank0.shape[0]
    for j, i in enumerate(ref_idx.tolist()):
        assert float((bn[: t0 + j] @ nn[i]).max()) < threshold
    rejected = sorted(set(range(new.shape[0])) - set(ref_idx.tolist()))
    for i in rejected:
        before = t0 + int((ref_idx < i).sum())
        assert float((bn[:before] @ nn[i]).max()) >= threshold - 1e-12


def test_extend_from_empty_bank_and_dedupe():
    x = DATA["random"][:50]
    bank, idx = extend_psc(torch.zeros(0, 16, dtype=torch.float64), x, 1.0)
    assert torch.equal(bank, x) and idx.tolist() == list(range(50))
    bank2, idx2 = extend_psc(bank, torch.cat([x[:5] * 2.0, x[:1]]), 1.0)
    assert idx2.numel() == 0 and torch.equal(bank2, bank)


def test_extend_bad_input():
    bank = torch.randn(4, 8)
    with pytest.raises(InvalidInputError, match="dimension"):
        extend_psc(bank, torch.randn(3, 7), 0.8)
    with pytest.raises(InvalidInputError, match="all-zero"):
        extend_psc(bank, torch.zeros(2, 8), 0.8)
    with pytest.raises(InvalidInputError, match="threshold"):
        extend_psc(bank, torch.randn(2, 8), -1.0)


# -- collect --------------------------------------------------------------------------------
def test_collect_features_order_and_zero_skip():
    g = torch.Generator().manual_seed(0)
    grids = [torch.randn(3, 4, 5, generator=g), torch.randn(2, 2, 5, generator=g)]
    grids[0][1, 2] = 0.0
    grids[1][0, 0] = 0.0
    feats, where = collect_features(grids, return_index=True)
    expected, expected_where = [], []
    for v, gr in enumerate(grids):
        for y in range(gr.shape[0]):
            for x in range(gr.shape[1]):
                if bool((gr[y, x] != 0).any()):
                    expected.append(gr[y, x])
                    expected_where.append([v, y, x])
    assert torch.equal(feats, torch.stack(expected))
    assert where.tolist() == expected_where
    assert torch.equal(collect_features(grids), feats)


def test_collect_features_bad_input():
    with pytest.raises(InvalidInputError, match="at least one"):
        collect_features([])
    with pytest.raises(InvalidInputError, match="dimension"):
        collect_features([torch.randn(2, 2, 4), torch.randn(2, 2, 5)])
    with pytest.raises(InvalidInputError, match=r"\[h, w, d\]"):
        collect_features([torch.randn(4, 5)])
    with pytest.raises(InvalidInputError, match="NaN"):
        collect_features([torch.full((1, 1, 2), float("nan"))])


def test_memory_is_bounded_by_chunk(monkeypatch):
    """Every similarity block is at most chunk_size x n (never n x n)."""
    import m3_core.memory.psc as psc

    shapes = []
    real = psc._neighbours

    def spy(x, rows, thr):
        out = real(x, rows, thr)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(psc, "_neighbours", spy)
    x = DATA["random"]
    _, idx = build_psc(x, 1.0, chunk_size=50)
    assert idx.numel() == x.shape[0]
    assert shapes and all(r <= 50 and c == x.shape[0] for r, c in shapes)
    assert sum(r for r, _ in shapes) == x.shape[0]  # each unclaimed row once
