"""Grounding index: lifted queries (fast vs dense twin), temperature fit, save/load, staleness."""

from __future__ import annotations

import math

import pytest
import torch

from m3_core.errors import InvalidInputError
from m3_core.memory.calibration import fit_temperature, rank_margins
from m3_core.memory.grounding import (
    INDEX_FILE,
    build_grounding_index,
    cameras_from_json,
    cameras_to_json,
    fit_temperatures,
    lift_queries,
    lift_queries_dense,
    load_grounding_index,
    memory_sha,
)
from m3_core.types import Camera
from tests.core.query.conftest import Blob, build_memory, front_camera, label_bank


def tiny_memory():
    return build_memory(
        [Blob("chair", (2.0, 0.3, 0.0), 12), Blob("table", (2.5, -0.4, 0.1), 10),
         Blob("floor", (3.0, 0.0, -0.6), 14, spread=0.5)],
        seed=1, opacity=0.7,
    )  # fmt: skip


def side_camera(width: int = 32, height: int = 24) -> Camera:
    """Left of the scene, looking along +y-ish at it (a second viewpoint)."""
    cam = front_camera(width, height, 25.0)
    c2w = cam.c2w.clone()
    rot = torch.tensor([[0.9, -0.4359, 0.0], [0.4359, 0.9, 0.0], [0.0, 0.0, 1.0]])
    c2w[:3, :3] = rot @ c2w[:3, :3]
    c2w[:3, 3] = torch.tensor([0.3, -0.5, 0.1])
    return Camera(cam.fx, cam.fy, cam.cx, cam.cy, width, height, c2w)


def test_lifted_queries_match_the_dense_twin():
    mem = tiny_memory()
    with torch.no_grad():  # every Gaussian its own query, so averages are not trivial
        mem.gaussians["queries"].add_(0.3 * torch.randn_like(mem.gaussians["queries"]))
    cams = [front_camera(32, 24, 25.0), side_camera()]
    lifted, vis = lift_queries(mem, cams, backend="torch")
    ref_lifted, ref_vis = lift_queries_dense(mem, cams)
    assert float(ref_vis.max()) > 1.0  # the views do see the Gaussians
    torch.testing.assert_close(vis, ref_vis, atol=1e-4, rtol=1e-4)
    seen = ref_vis > 1e-3  # where a Gaussian is (almost) unseen its average is ill-conditioned
    torch.testing.assert_close(lifted[seen], ref_lifted[seen], atol=1e-4, rtol=1e-4)
    unseen = ref_vis <= 1e-6
    torch.testing.assert_close(lifted[unseen], mem.gaussians["queries"].detach()[unseen])
    numba_lifted, numba_vis = lift_queries(mem, cams, backend="numba")
    torch.testing.assert_close(numba_vis, ref_vis, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(numba_lifted[seen], ref_lifted[seen], atol=1e-4, rtol=1e-4)


def kth_other_plain(row: torch.Tensor, j: int, k: int) -> float:
    """The k-th largest entry of ``row`` other than entry j, by sorting."""
    return float(torch.cat([row[:j], row[j + 1 :]]).sort(descending=True).values[k - 1])


def test_rank_margins_equal_a_plain_loop():
    g = torch.Generator().manual_seed(3)
    cos = torch.rand(40, 9, generator=g) * 2 - 1
    for k in (1, 3):
        ref = torch.tensor([[float(row[j] - kth_other_plain(row, j, k)) for j in range(9)]
                            for row in cos])  # fmt: skip
        torch.testing.assert_close(rank_margins(cos, k), ref, rtol=0, atol=1e-6)
        assert ((rank_margins(cos, k) > 0).sum(1) == k).all()  # exactly the top k are positive


def test_fit_temperature_recovers_the_generating_temperature():
    g = torch.Generator().manual_seed(0)
    margins, t_true = torch.rand(20000, 12, generator=g) - 0.7, 0.07
    positives = torch.rand(margins.shape, generator=g) < torch.sigmoid(margins / t_true)
    assert fit_temperature(margins, positives) == pytest.approx(t_true, rel=0.05)
    # perfectly separable: the fit goes to the sharp end of the range, finite
    assert 1e-3 <= fit_temperature(margins, margins > 0) < 0.01
    with pytest.raises(InvalidInputError):
        fit_temperature(margins[:0], positives[:0])


def test_fit_temperature_minimises_torch_binary_cross_entropy():
    """The fit (softplus form, mean(y z) once) is the minimiser of torch's
    binary_cross_entropy_with_logits(z / T, y): checked against a dense scan of log T."""
    g = torch.Generator().manual_seed(1)
    margins = torch.randn(50000, generator=g) * 0.03 - 0.02
    positives = torch.rand(margins.shape, generator=g) < torch.sigmoid(margins / 0.012)
    log_t = torch.linspace(math.log(1e-3), math.log(1.0), 4001, dtype=torch.float64)
    z, y = margins.double(), positives.double()
    losses = torch.stack(
        [torch.nn.functional.binary_cross_entropy_with_logits(z / math.exp(v), y) for v in log_t]
    )
    best = math.exp(float(log_t[losses.argmin()]))
    step = float(log_t[1] - log_t[0])
    assert math.log(fit_temperature(margins, positives)) == pytest.approx(math.log(best), abs=step)


def test_index_calibrates_on_real_feature_grids_and_round_trips(tmp_path):
    mem = tiny_memory()
    out = tmp_path / "mem"
    mem.save(out)
    cams = [front_camera(32, 24, 25.0), side_camera()]
    bank = label_bank()
    # "real" feature grids: the label rows as rendered, with a little noise
    with torch.no_grad():
        from m3_core.memory.render import render_memory

        grids = [render_memory(mem, c, ["labels"])["labels"][::4, ::4] for c in cams]
    grids = [gr + 0.05 * torch.randn(gr.shape, generator=torch.Generator().manual_seed(2))
             for gr in grids]  # fmt: skip
    index = build_grounding_index(
        mem, cams, calibration={"labels": (bank, grids)}, backend="torch",
        memory_sha=memory_sha(out),
    )  # fmt: skip
    assert index.num_views == 2 and set(index.temperatures) == {"labels"}
    assert 1e-3 <= index.temperatures["labels"] <= 1.0
    # the same fit without lifting (the live memory's path): forward renders only
    alone = fit_temperatures(mem, cams, {"labels": (bank, grids)}, backend="torch")
    assert alone == pytest.approx(index.temperatures, rel=1e-6)
    index.save(out)
    back = load_grounding_index(out, mem)
    assert back is not None
    torch.testing.assert_close(back.queries, index.queries)
    torch.testing.assert_close(back.visibility, index.visibility)
    assert back.temperatures == pytest.approx(index.temperatures)
    # the memory changes (a new save of other tensors): the index is stale
    with torch.no_grad():
        mem.gaussians["means"].add_(0.01)
    mem.save(out)
    assert load_grounding_index(out, mem) is None
    # a corrupt index is no index
    index.memory_sha = memory_sha(out)
    index.save(out)
    assert load_grounding_index(out, mem) is not None
    (out / INDEX_FILE).write_bytes(b"\x00" * 40)
    assert load_grounding_index(out, mem) is None


def test_cameras_json_round_trip_and_bad_entries():
    cams = [front_camera(32, 24, 25.0), side_camera()]
    back = cameras_from_json(cameras_to_json(cams))
    for a, b in zip(cams, back):
        assert (a.width, a.height) == (b.width, b.height)
        torch.testing.assert_close(a.K, b.K, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.c2w, b.c2w, atol=1e-6, rtol=0)
    with pytest.raises(InvalidInputError):
        cameras_from_json([{"K": [1, 2, 3], "size": [4, 4], "c2w": [0] * 12}])


def test_predictor_lifts_over_the_memory_cameras_when_the_index_is_missing(tmp_path):
    from m3_core.data.features import FeatureStore
    from m3_core.query import MemoryPredictor
    from tests.core.query.conftest import CHAIR_CENTER, LABELS, scene_blobs

    mem = build_memory(scene_blobs())
    out = tmp_path / "mem"
    cams = [front_camera(), side_camera(64, 48)]
    mem.save(out, extra={"cameras": cameras_to_json(cams)})
    store = FeatureStore(out, "labels")
    store.save_vocabulary(LABELS, label_bank())
    store.save_meta({"model": "synthetic-labels", "dim": 16})
    pred = MemoryPredictor.load(out, device="cpu")
    assert pred.index is not None and (out / INDEX_FILE).is_file()
    assert pred.features.visibility() is not None
    assert not pred.index.temperatures  # no real feature maps here: the default temperature
    assert pred.temperature("labels") == pytest.approx(0.1)
    (obj, *_) = pred.ground("chair", min_score=0.5)
    # the visible surface: only the chair's Gaussians facing the cameras count (centre on the
    # front of the 0.16 m blob, not inside it)
    assert math.dist(obj.center, CHAIR_CENTER) < 0.1 and obj.num_gaussians < 200
