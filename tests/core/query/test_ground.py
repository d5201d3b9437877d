"""Grounding: blobs of relevant Gaussians -> objects with the right centres and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3_core.errors import InvalidInputError
from m3_core.query.ground import (
    GroundParams,
    cluster_dbscan,
    cluster_voxels,
    ground,
    ground_points,
)


def blob(center, n, half, rng):
    half = np.asarray(half, np.float64)
    return np.asarray(center) + rng.uniform(-half, half, (n, 3))


def two_blob_scene(rng):
    a = blob((1.0, 2.0, 0.5), 300, (0.2, 0.1, 0.3), rng)  # big object
    b = blob((-1.5, 0.0, 0.2), 100, (0.1, 0.1, 0.1), rng)  # small object
    bg = rng.uniform(-3, 3, (400, 3))  # irrelevant background
    means = np.concatenate([a, b, bg]).astype(np.float32)
    rel = np.concatenate([np.full(300, 0.9), np.full(100, 0.8), np.full(400, 0.1)])
    return means, np.full(800, 0.9, np.float32), rel.astype(np.float32)


def test_two_blobs_give_two_objects_with_right_centres_and_boxes():
    means, opa, rel = two_blob_scene(np.random.default_rng(0))
    objs = ground_points(means, opa, rel, GroundParams(box_percentile=0.0), label="thing")
    assert len(objs) == 2
    big, small = objs  # best first: more evidence
    np.testing.assert_allclose(big.center, (1.0, 2.0, 0.5), atol=0.02)
    np.testing.assert_allclose(small.center, (-1.5, 0.0, 0.2), atol=0.02)
    # percentile 0 -> the exact extent of the members (uniform cubes: close to the true box)
    np.testing.assert_allclose(big.bbox_min, means[:300].min(0), atol=1e-6)
    np.testing.assert_allclose(big.bbox_max, means[:300].max(0), atol=1e-6)
    np.testing.assert_allclose(big.bbox_max - big.bbox_min, (0.4, 0.2, 0.6), atol=0.02)
    assert (big.num_gaussians, small.num_gaussians) == (300, 100)
    assert big.score == pytest.approx(0.9) and small.score == pytest.approx(0.8)
    assert big.label == "thing"
    assert sorted(big.indices.tolist()) == list(range(300))


def test_robust_box_ignores_a_few_outliers():
    rng = np.random.default_rng(1)
    pts = blob((0, 0, 0), 500, 0.1, rng)
    pts[:5] += (0.12, 0.0, 0.0)  # a few stragglers still linked to the blob
    rel = np.ones(500, np.float32)
    (obj,) = ground_points(pts, np.ones(500), rel, GroundParams(box_percentile=2.0))
    assert obj.bbox_max[0] < 0.11  # the 98th percentile, not the stragglers at ~0.2


def test_nothing_relevant_gives_empty_answer():
    means, opa, rel = two_blob_scene(np.random.default_rng(2))
    assert ground_points(means, opa, rel * 0.5, GroundParams(min_score=0.5)) == []
    assert ground_points(means, opa * 0.05, rel, GroundParams(min_opacity=0.1)) == []
    assert ground_points(np.zeros((0, 3)), np.zeros(0), np.zeros(0)) == []


def test_small_clusters_are_noise_and_max_results_cuts():
    means, opa, rel = two_blob_scene(np.random.default_rng(3))
    objs = ground_points(means, opa, rel, GroundParams(min_gaussians=150))
    assert [o.num_gaussians for o in objs] == [300]
    assert len(ground_points(means, opa, rel, GroundParams(max_results=1))) == 1


def test_verify_hook_drops_rejected_candidates():
    means, opa, rel = two_blob_scene(np.random.default_rng(4))
    seen = []

    def verify(obj):
        seen.append(obj.num_gaussians)
        return obj.num_gaussians < 200

    objs = ground_points(means, opa, rel, GroundParams(), verify=verify)
    assert [o.num_gaussians for o in objs] == [100] and seen == [300, 100]


def test_voxel_clusters_equal_dbscan_on_separated_blobs():
    rng = np.random.default_rng(5)
    centres = rng.uniform(-5, 5, (6, 3))
    centres = centres[np.argsort(centres[:, 0])]
    centres[:, 0] += np.arange(6) * 2.0  # at least 2 m apart along x
    pts = np.concatenate([blob(c, 300, 0.1, rng) for c in centres])  # dense: spacing ~3 cm
    a, b = cluster_voxels(pts, 0.1), cluster_dbscan(pts, 0.1)
    # same partition (labels may be permuted)
    pairs = set(zip(a.tolist(), b.tolist()))
    assert len(pairs) == len(set(a.tolist())) == len(set(b.tolist())) == 6


def test_voxel_clusters_never_split_points_closer_than_eps():
    rng = np.random.default_rng(6)
    pts = rng.uniform(0, 2, (600, 3))
    vox, db = cluster_voxels(pts, 0.15), cluster_dbscan(pts, 0.15)
    for c in np.unique(db):  # each exact single-linkage cluster lies in one voxel cluster
        assert len(np.unique(vox[db == c])) == 1
    # a chain of points 0.09 apart is one cluster, two points 0.5 apart are two
    chain = np.stack([np.arange(20) * 0.09, np.zeros(20), np.zeros(20)], 1)
    assert len(np.unique(cluster_voxels(chain, 0.1))) == 1
    assert len(np.unique(cluster_voxels(np.array([[0, 0, 0], [0.5, 0, 0]]), 0.1))) == 2


def test_dbscan_method_gives_same_objects():
    means, opa, rel = two_blob_scene(np.random.default_rng(7))
    a = ground_points(means, opa, rel, GroundParams(method="voxel"))
    b = ground_points(means, opa, rel, GroundParams(method="dbscan"))
    assert [o.num_gaussians for o in a] == [o.num_gaussians for o in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.center, y.center)


def test_ground_on_memory_uses_activated_opacity(scene_memory):
    n = scene_memory.num_gaussians
    rel = torch.zeros(n)
    rel[:200] = 0.9  # the chair blob
    (obj,) = ground(scene_memory, rel, label="chair")
    np.testing.assert_allclose(obj.center, (2.0, 0.5, 0.0), atol=0.02)
    with torch.no_grad():
        scene_memory.gaussians["opacities"].fill_(-5.0)  # sigmoid -> 0.0067 < min_opacity
    assert ground(scene_memory, rel) == []


def test_bad_input_is_refused():
    with pytest.raises(InvalidInputError):
        ground_points(np.zeros((4, 3)), np.zeros(4), np.zeros(5))
    with pytest.raises(InvalidInputError):
        ground_points(np.zeros((4, 3)), np.zeros(4), np.full(4, np.nan))
    for bad in (
        {"min_score": 1.5},
        {"eps": 0.0},
        {"min_gaussians": 0},
        {"max_results": 0},
        {"method": "kmeans"},
        {"box_percentile": 50.0},
    ):
        with pytest.raises(InvalidInputError):
            GroundParams(**bad)


def test_to_dict_is_json_ready():
    means, opa, rel = two_blob_scene(np.random.default_rng(8))
    d = ground_points(means, opa, rel, label="x")[0].to_dict()
    assert set(d) == {"label", "score", "position", "bbox_min", "bbox_max", "num_gaussians"}
    assert all(isinstance(v, float) for v in d["position"]) and len(d["position"]) == 3
