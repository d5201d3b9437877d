"""PSC (Algorithm 1): the fast paths (dense walk, cluster prefilter) vs the float64 plain loop,
ties at the threshold, the rounding bounds, hand examples, extend, collect."""

from __future__ import annotations

import math

import pytest
import torch

import m3_core.memory.psc as psc
from m3_core.errors import InvalidInputError
from m3_core.memory import (
    build_psc,
    build_psc_reference,
    collect_features,
    extend_psc,
    extend_psc_reference,
)
from m3_core.memory.psc_match import ClusterIndex, decide, exact_cos, product_error, unit_rows

from .conftest import clustered

THRESHOLDS = [0.6, 0.7, 0.8, 0.9, 0.95, 1.0]


def _ties(n: int, d: int, seed: int) -> torch.Tensor:
    """float32 rows whose cosines sit exactly on 0.6 and 0.8 in exact arithmetic: axes e_a,
    0.8 e_a + 0.6 e_b and 0.6 e_a + 0.8 e_b, randomly scaled and shuffled."""
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(d, dtype=torch.float64)
    a, b = torch.randint(0, d, (2, n), generator=g)
    b = torch.where(a == b, (b + 1) % d, b)
    kind = torch.randint(0, 3, (n, 1), generator=g)
    rows = torch.where(kind == 0, eye[a], torch.where(kind == 1, 0.8, 0.6) * eye[a])
    rows = rows + torch.where(kind == 1, 0.6, torch.where(kind == 2, 0.8, 0.0)) * eye[b]
    scale = torch.rand(n, 1, generator=g, dtype=torch.float64) * 3 + 0.25
    return (rows * scale).float()


def _datasets():
    g = torch.Generator().manual_seed(3)
    rand = torch.randn(600, 16, generator=g, dtype=torch.float64)
    clus = clustered(900, 24, 12, 1.2, seed=4)
    # exact and scaled duplicates (cos == 1 up to rounding)
    dup = torch.cat([clus[:200], clus[50:120] * 3.0, clus[:40]])[torch.randperm(310, generator=g)]
    return {
        "random": rand,
        "clustered": clus,
        "duplicates": dup,
        "clustered32": clustered(700, 48, 30, 0.9, seed=5, dtype=torch.float32),
        "random32": torch.randn(500, 64, generator=g),
        "ties32": _ties(500, 6, seed=6),
        "half": clustered(400, 32, 10, 0.7, seed=8, dtype=torch.float32).half(),
    }


DATA = _datasets()


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_build_matches_reference(kind, threshold):
    """Every fast path keeps exactly the rows of the float64 plain loop: the dense walk at
    several chunk sizes and the cluster prefilter at several cluster counts (too few: the
    k-means groups are merged and get split; too many: tiny clusters; tiny blocks: many
    padded batches and row slices)."""
    x = DATA[kind]
    ref_bank, ref_idx = build_psc_reference(x, threshold)
    runs = [{"clusters": 0, "chunk_size": c} for c in (1, 37, 10_000)]
    runs += [{"clusters": k} for k in (3, 25, 120)]
    runs += [{"clusters": 25, "block_entries": 300}]
    for kw in runs:
        bank, idx = build_psc(x, threshold, **kw)
        assert torch.equal(idx, ref_idx), (kind, threshold, kw)
        assert torch.equal(bank, ref_bank)
    assert torch.equal(ref_bank, x[ref_idx])  # raw rows, walk order
    assert bool((ref_idx[1:] > ref_idx[:-1]).all())


def test_ties_are_on_the_threshold():
    """The tie set really has float32 products on both sides of 0.8 (so a decision without the
    float64 recheck could differ between product shapes) and float64 cosines within float32
    rounding of 0.8, inside the match tolerance."""
    x = DATA["ties32"]
    xn = unit_rows(x)
    sim = xn @ xn.T
    near = ((sim - 0.8).abs() < 1e-5).nonzero()
    assert near.shape[0] > 1000
    exact = exact_cos(x[near[:, 0]], x[near[:, 1]])
    assert float((exact - 0.8).abs().max()) < 1e-6 < psc.MATCH_TOLERANCE
    fast = sim[near[:, 0], near[:, 1]]
    assert bool((fast < 0.8).any()) and bool((fast >= 0.8).any())


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


def test_auto_clusters_on_a_larger_set():
    """From 4096 rows on the prefilter is on by default; same rows as the plain loop, also
    through max_inputs."""
    x = clustered(5000, 32, 60, 1.0, seed=9, dtype=torch.float32)
    for theta in (0.7, 0.9):
        ref = build_psc_reference(x, theta)[1]
        assert torch.equal(build_psc(x, theta)[1], ref)
    sub = torch.randperm(5000, generator=torch.Generator().manual_seed(0))[:4500].sort().values
    _, idx = build_psc(x, 0.8, max_inputs=4500)
    assert torch.equal(idx, sub[build_psc_reference(x[sub], 0.8)[1]])


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
        (torch.randn(4, 3), {"clusters": -1}, "clusters"),
        (torch.randn(4, 3), {"block_entries": 0}, "block_entries"),
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
@pytest.mark.parametrize("kind", ["clustered", "clustered32", "ties32"])
def test_extend_matches_reference_and_rule(kind, threshold):
    x = DATA[kind]
    bank0, _ = build_psc(x[:300], threshold)
    new = x[300:]
    ref_bank, ref_idx = extend_psc_reference(bank0, new, threshold)
    for chunk in (1, 29, 4096):
        bank, idx = extend_psc(bank0, new, threshold, chunk_size=chunk)
        assert torch.equal(idx, ref_idx) and torch.equal(bank, ref_bank)
    assert torch.equal(ref_bank[: bank0.shape[0]], bank0)  # old rows never move
    assert torch.equal(ref_bank[bank0.shape[0] :], new[ref_idx])
    # rule: an added row is far from everything before it; a rejected one is near something
    # (in float64, "cos >= theta" meaning cos >= theta - MATCH_TOLERANCE)
    bn = torch.nn.functional.normalize(ref_bank.double(), dim=1)
    nn = torch.nn.functional.normalize(new.double(), dim=1)
    t0, thr = bank0.shape[0], threshold - psc.MATCH_TOLERANCE
    for j, i in enumerate(ref_idx.tolist()):
        assert float((bn[: t0 + j] @ nn[i]).max()) < thr
    rejected = sorted(set(range(new.shape[0])) - set(ref_idx.tolist()))
    for i in rejected:
        before = t0 + int((ref_idx < i).sum())
        assert float((bn[:before] @ nn[i]).max()) >= thr


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


def test_memory_is_bounded_by_block(monkeypatch):
    """Every similarity block holds at most block_entries values (never n x n); the dense walk
    computes each still-unclaimed row once."""
    import m3_core.memory.psc as psc
    import m3_core.memory.psc_match as pm

    shapes = []

    def spy(sim, *args):
        shapes.append(tuple(sim.shape))
        return decide(sim, *args)

    monkeypatch.setattr(psc, "decide", spy)
    monkeypatch.setattr(pm, "decide", spy)
    x = DATA["random"]
    n = x.shape[0]
    _, idx = build_psc(x, 1.0, clusters=0, block_entries=50 * n)
    assert idx.numel() == n
    assert shapes and all(r <= 50 and c == n for r, c in shapes)
    assert sum(r for r, _ in shapes) == n
    shapes.clear()
    _, idx = build_psc(DATA["clustered"], 0.8, clusters=30, block_entries=2000)
    assert shapes and all(r * c <= 2000 for r, c in shapes)
    assert torch.equal(idx, build_psc_reference(DATA["clustered"], 0.8)[1])


# -- rounding bounds and the cluster prefilter ------------------------------------------------
@pytest.mark.parametrize("dtype, slack", [(torch.float32, 1000), (torch.bfloat16, 50)])
def test_product_error_bounds_the_fast_products(dtype, slack):
    """|fast cos - float64 cos| stays under product_error (a worst case: float32 errors
    average out, so it is ~300x the typical largest one), which is not absurdly loose."""
    g = torch.Generator().manual_seed(0)
    d = 768
    raw = torch.randn(400, d, generator=g) * torch.rand(400, 1, generator=g).add(0.1)
    raw[200:] = raw[:200] + 0.3 * torch.randn(200, d, generator=g)  # some large cosines
    x = unit_rows(raw)
    fast = (x.to(dtype) @ x.to(dtype).T).double()
    x64 = unit_rows(raw.double(), torch.float64)
    err = float((fast - x64 @ x64.T).abs().max())
    bound = product_error(d, dtype)
    assert err < bound
    assert err > bound / slack


def test_decide_equals_the_exact_rule():
    sim = torch.tensor([[0.79, 0.7999, 0.80001, 0.81], [0.5, 0.8, 0.8, 0.9]])
    exact = torch.tensor([[0.79, 0.80, 0.79999, 0.81], [0.5, 0.7999, 0.8001, 0.9]]).double()
    out = decide(sim, 0.8, 1e-3, lambda i, j: exact[i, j])
    assert torch.equal(out, exact >= 0.8)
    # pairs far from the threshold are never recomputed
    calls = []
    decide(sim, 0.8, 1e-6, lambda i, j: calls.append(i.numel()) or exact[i, j])
    assert calls == [2]  # 0.8 twice, within 1e-6 of the threshold


@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.95])
def test_cluster_index_never_prunes_a_match(threshold):
    """The angular bound: for every row and every cluster it does not reach, all float64
    cosines with the cluster's members are below the threshold; the index covers every row
    once; graph() finds exactly the float64 match set."""
    raw = DATA["clustered"]
    x = unit_rows(raw)
    x64 = unit_rows(raw, torch.float64)
    thr = threshold - psc.MATCH_TOLERANCE
    index = ClusterIndex(x, thr, 10)
    assert torch.equal(index.order.sort().values, torch.arange(raw.shape[0]))
    truth = (x64 @ x64.T) >= thr  # [n, n]
    reach = index.reach(x)  # [n, k]
    assign = torch.empty(raw.shape[0], dtype=torch.long)
    for b in range(index.k):
        assign[index.order[index.starts[b] : index.starts[b + 1]]] = b
    assert not bool((truth & ~reach[:, assign]).any())
    assert float(reach.float().mean()) < 0.8  # and it does prune
    bound = product_error(x.shape[1], torch.float32)
    n2 = raw.shape[0] ** 2
    for kw in (
        {"max_entries": n2},
        {"piece": 3, "batch_rows": 5, "block_entries": 40, "max_entries": n2},
    ):
        r, c = index.graph(x, thr, bound, lambda i, j: exact_cos(raw[i], raw[j]), **kw)
        got = torch.zeros_like(truth)
        got[r, c] = True
        assert torch.equal(got, truth), kw
    assert index.graph(x, thr, bound, exact_cos, max_entries=10) is None
    many = int(truth.sum())  # the match count: one fewer allowed gives up (the dense walk)
    cos = lambda i, j: exact_cos(raw[i], raw[j])  # noqa: E731
    assert index.graph(x, thr, bound, cos, max_entries=n2, max_pairs=many - 1) is None
    assert index.graph(x, thr, bound, cos, max_entries=n2, max_pairs=many) is not None


@pytest.mark.parametrize("threshold", [0.7, 0.95, 1.0])
def test_repeated_rows_keep_what_the_plain_loop_keeps(threshold):
    """Exact label maps repeat a few vectors thousands of times: the walk over distinct rows
    (psc.first_occurrences) keeps exactly the float64 loop's rows, clustered or dense."""
    g = torch.Generator().manual_seed(4)
    base = torch.cat([torch.randn(6, 12, generator=g), DATA["clustered"][:40, :12].float()])
    x = base[torch.randint(0, base.shape[0], (900,), generator=g)]  # [900, 12] with repeats
    assert psc.first_occurrences(x).numel() < 50
    assert psc.first_occurrences(x[:1]) is None
    _, ref = build_psc_reference(x, threshold)
    for clusters in (0, 8):
        bank, kept = build_psc(x, threshold, clusters=clusters)
        assert torch.equal(kept, ref), clusters
        torch.testing.assert_close(bank, x[ref], rtol=0, atol=0)


def test_wide_clusters_fall_back_to_the_dense_walk(monkeypatch):
    """When the prefilter would compute too many products, build_psc walks densely."""
    import m3_core.memory.psc_match as pm

    real = pm.ClusterIndex.graph
    calls = []

    def tight(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **{**kwargs, "max_entries": 5})

    monkeypatch.setattr(pm.ClusterIndex, "graph", tight)
    x = DATA["clustered32"]
    assert torch.equal(build_psc(x, 0.8, clusters=20)[1], build_psc_reference(x, 0.8)[1])
    assert calls == [1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for kind in ("clustered32", "ties32", "clustered"):
        x = DATA[kind]
        for theta in (0.6, 0.8, 1.0):
            ref = build_psc_reference(x, theta)[1]
            for k in (0, 25):
                bank, idx = build_psc(x.cuda(), theta, clusters=k)
                assert idx.device.type == "cuda" and bank.device.type == "cuda"
                assert torch.equal(idx.cpu(), ref), (kind, theta, k)
        bank0 = build_psc(x[:200], 0.8)[0]
        assert torch.equal(
            extend_psc(bank0.cuda(), x[200:].cuda(), 0.8)[1].cpu(),
            extend_psc_reference(bank0, x[200:], 0.8)[1],
        )
