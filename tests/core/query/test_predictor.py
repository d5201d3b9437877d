"""MemoryPredictor on a hand-built memory with a chair blob, a table blob and a floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3_core.errors import InvalidInputError, M3Error, UnknownModelError
from m3_core.query import MemoryPredictor, TextEncoder

from .conftest import CHAIR_CENTER, TABLE_CENTER, front_camera, pixel_of


@pytest.fixture
def closed_predictor(scene_memory, vocab):
    return MemoryPredictor(scene_memory, TextEncoder(vocabularies=vocab))


@pytest.fixture
def open_predictor(scene_memory, fake_tower):
    enc = TextEncoder(metas={"labels": {"model": "testtower", "has_text": True}})
    return MemoryPredictor(scene_memory, enc)


@pytest.mark.parametrize("which", ["closed_predictor", "open_predictor"])
def test_ground_finds_each_object_and_nothing_for_absent(which, request):
    pred = request.getfixturevalue(which)
    (chair,) = pred.ground("chair")
    np.testing.assert_allclose(chair.center, CHAIR_CENTER, atol=0.03)
    assert chair.num_gaussians == 200 and chair.score > 0.95 and chair.label == "chair"
    assert np.all(chair.bbox_min <= chair.center) and np.all(chair.center <= chair.bbox_max)
    np.testing.assert_allclose(chair.bbox_max - chair.bbox_min, 0.16, atol=0.02)
    (table,) = pred.ground("table", max_results=3)
    np.testing.assert_allclose(table.center, TABLE_CENTER, atol=0.03)
    assert pred.ground("lamp") == []  # known text, absent from the scene


def test_unrelated_text_scores_low_in_open_vocabulary(open_predictor):
    rel = open_predictor.relevancy("spaceship")
    assert float(rel.max()) < 0.01  # sigmoid((0 - 0.5) / 0.1) = 0.0067
    assert open_predictor.ground("spaceship") == []
    rel_chair = open_predictor.relevancy("chair")
    assert float(rel_chair[:200].min()) > 0.99 and float(rel_chair[200:].max()) < 0.01


def test_min_score_override(closed_predictor):
    assert closed_predictor.ground("chair", min_score=1.0) == []
    with pytest.raises(InvalidInputError):
        closed_predictor.ground("chair", min_score=2.0)


def test_top_points_are_on_the_object(closed_predictor):
    pts, scores = closed_predictor.top_points("table", k=5)
    assert pts.shape == (5, 3) and scores.shape == (5,)
    assert np.all(np.abs(pts - np.array(TABLE_CENTER)) <= 0.081)
    assert np.all(scores > 0.95) and np.all(np.diff(scores) <= 0)
    with pytest.raises(InvalidInputError):
        closed_predictor.top_points("table", k=0)


def test_relevancy_image_lights_up_the_object(closed_predictor):
    cam = front_camera()
    img = closed_predictor.relevancy_image("chair", cam)
    assert img.shape == (48, 64) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    r, c = pixel_of(CHAIR_CENTER, cam)
    rt, ct = pixel_of(TABLE_CENTER, cam)
    assert img[r, c] > 0.9 and img[rt, ct] < 0.1
    assert img[0, 0] == 0.0  # empty space (alpha < 0.5)
    # the per-pixel decode agrees with the per-Gaussian one: the table image is the mirror
    img_t = closed_predictor.relevancy_image("table", cam)
    assert img_t[rt, ct] > 0.9 and img_t[r, c] < 0.1


def test_render_and_cloud(closed_predictor):
    out = closed_predictor.render(front_camera(), ["labels"])
    assert set(out) == {"rgb", "depth", "alpha", "labels"}
    assert out["labels"].shape == (48, 64, 16) and isinstance(out["rgb"], np.ndarray)
    assert 0.0 <= out["rgb"].min() and out["rgb"].max() <= 1.0
    pts, rgb = closed_predictor.gaussian_cloud(100)
    pts2, _ = closed_predictor.gaussian_cloud(100)
    assert pts.shape == (100, 3) and rgb.shape == (100, 3)
    np.testing.assert_array_equal(pts, pts2)
    assert closed_predictor.gaussian_cloud(10_000)[0].shape == (470, 3)
    with pytest.raises(UnknownModelError):
        closed_predictor.render(front_camera(), ["clip"])


def test_feature_names_and_errors(closed_predictor, scene_memory):
    assert closed_predictor.default_feature == "labels"
    with pytest.raises(UnknownModelError, match="labels"):
        closed_predictor.ground("chair", feature="clip")
    with pytest.raises(InvalidInputError):
        closed_predictor.ground("   ")
    with pytest.raises(InvalidInputError):
        closed_predictor.ground("spaceship")  # not in the closed vocabulary
    no_text = MemoryPredictor(scene_memory, TextEncoder())
    with pytest.raises(M3Error, match="can embed text"):
        no_text.ground("chair")


def test_caches_follow_the_memory(closed_predictor):
    pred = closed_predictor
    assert len(pred.ground("chair")) == 1
    count = pred.features.decode_count
    pred.ground("table")
    assert pred.features.decode_count == count  # cached: no new decode
    q = pred.memory.gaussians["queries"]
    with torch.no_grad():  # the chair becomes a second table
        q[:200] = q[200:201].clone()
    tables = pred.ground("table")
    assert pred.features.decode_count == count + 1
    assert sorted(o.num_gaussians for o in tables) == [120, 200]
    assert pred.ground("chair") == []


def test_load_from_folder(memory_dir):
    pred = MemoryPredictor.load(memory_dir, device="cpu")
    (chair,) = pred.ground("chair")
    np.testing.assert_allclose(chair.center, CHAIR_CENTER, atol=0.03)
    assert pred.memory.num_gaussians == 470


def test_gaussian_cloud_coloured_by_relevancy(closed_predictor):
    pred = closed_predictor
    n = pred.memory.num_gaussians
    rel = torch.linspace(0, 1, n)
    pts, rgb = pred.gaussian_cloud(n, rel)
    pts0, base = pred.gaussian_cloud(n)
    np.testing.assert_array_equal(pts, pts0)
    from matplotlib import colormaps

    keep = np.isin(pred.memory.gaussians["means"].detach().numpy()[:, 0], pts[:, 0])
    expect = colormaps["turbo"](rel.numpy()[keep])[:, :3]
    np.testing.assert_allclose(rgb, expect, atol=1e-6)
    assert not np.allclose(rgb, base)
