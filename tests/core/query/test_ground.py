"""Grounding: blobs of relevant Gaussians -> objects with the right centres and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3_core.errors import InvalidInputError
from m3_core.query.ground import (
    GroundParams,
    cluster_dbscan,
    cluster_kdtree,
    cluster_voxels,
    ground,
    ground_points,
    merge_fragments,
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
    room = rng.uniform(-3, 3, (2000, 3))  # the rest of the room, irrelevant
    rel = np.r_[np.ones(500), np.zeros(2000)].astype(np.float32)
    (obj,) = ground_points(np.r_[pts, room], np.ones(2500), rel, GroundParams(box_percentile=2.0))
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
        {"link_cosine": 1.5},
        {"min_visibility": -1.0},
        {"min_contrast": 2.0},
        {"box_percentile": 50.0},
    ):
        with pytest.raises(InvalidInputError):
            GroundParams(**bad)


def test_to_dict_is_json_ready():
    means, opa, rel = two_blob_scene(np.random.default_rng(8))
    d = ground_points(means, opa, rel, label="x")[0].to_dict()
    assert set(d) == {
        "label", "score", "position", "bbox_min", "bbox_max", "num_gaussians", "support"
    }  # fmt: skip
    assert all(isinstance(v, float) for v in d["position"]) and len(d["position"]) == 3


def test_kdtree_clusters_equal_exact_single_linkage():
    rng = np.random.default_rng(9)
    pts = rng.uniform(0, 2, (800, 3))
    a, b = cluster_kdtree(pts, 0.12), cluster_dbscan(pts, 0.12)
    pairs = set(zip(a.tolist(), b.tolist()))  # the same partition, labels permuted
    assert len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_neighbour_cap_keeps_dense_blobs_whole_and_sparse_clouds_exact():
    rng = np.random.default_rng(16)
    sparse = rng.uniform(0, 2, (800, 3))  # ~1 centre within eps: the cap never bites
    a, b = cluster_kdtree(sparse, 0.12, neighbours=16), cluster_kdtree(sparse, 0.12)
    assert len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))
    dense = np.r_[blob((0, 0, 0), 3000, 0.2, rng), blob((1, 0, 0), 3000, 0.2, rng)]
    capped = cluster_kdtree(dense, 0.1, neighbours=16)  # hundreds within eps, 16 links each
    assert len(set(capped.tolist())) == 2 and len(set(capped[:3000].tolist())) == 1


def test_feature_edges_split_touching_objects_and_the_wall_behind():
    rng = np.random.default_rng(10)
    lamp = blob((0.3, -2.2, 0.7), 400, (0.15, 0.15, 0.7), rng)
    wall = np.c_[rng.uniform(-0.5, 1.1, 1500), np.full(1500, -2.4), rng.uniform(0, 1.5, 1500)]
    f_lamp, f_wall = np.eye(4)[0], np.eye(4)[1]
    feats = np.r_[np.tile(f_lamp, (400, 1)), np.tile(f_wall, (1500, 1))]
    bg = rng.uniform(-3, 3, (3000, 3))  # the rest of the room
    means = np.r_[lamp, wall, bg]
    feats = np.r_[feats, np.tile(np.eye(4)[2], (3000, 1))]
    # blended borders: the wall near the lamp scores as "lamp" too
    rel = np.r_[np.full(400, 0.95), np.full(1500, 0.7), np.zeros(3000)]
    opa = np.ones(len(means))
    merged = ground_points(means, opa, rel, GroundParams(link_cosine=-1.0, min_contrast=0.0))
    assert merged[0].num_gaussians > 1800  # geometry alone: one blob, lamp + wall
    objs = ground_points(means, opa, rel, GroundParams(), features=feats)
    assert sorted(o.num_gaussians for o in objs) == [400, 1500]  # lamp and wall apart
    lamp_obj = next(o for o in objs if o.score > 0.9)
    assert lamp_obj.bbox_min[1] > -2.38 and lamp_obj.score == pytest.approx(0.95)
    np.testing.assert_allclose(lamp_obj.center, (0.3, -2.2, 0.7), atol=0.03)


def test_text_matching_the_whole_room_a_little_matches_nothing():
    rng = np.random.default_rng(11)
    means = rng.uniform(-3, 3, (3000, 3))
    rel = rng.uniform(0.45, 0.75, 3000)  # everything a bit relevant: no object stands out
    assert ground_points(means, np.ones(3000), rel, GroundParams(eps=0.5)) == []
    rel[:5] = 0.0  # keep the room level; a real object stands out by more than min_contrast
    obj_pts = blob((1, 1, 1), 300, 0.1, rng)
    objs = ground_points(
        np.r_[means, obj_pts], np.ones(3300), np.r_[rel * 0.1, np.full(300, 0.99)],
        GroundParams(eps=0.2),
    )  # fmt: skip
    assert len(objs) == 1 and objs[0].num_gaussians == 300


def test_visibility_weights_score_and_drops_hidden_gaussians():
    means, opa, rel = two_blob_scene(np.random.default_rng(12))
    vis = np.full(800, 50.0)
    vis[300:400] = 0.2  # the small object is hidden (inside something): never seen
    vis[400:] = 500.0  # the room around them: seen a lot, irrelevant
    rel = rel.copy()
    rel[:150], rel[150:300] = 0.6, 1.0  # half the big blob seen 4x as much as the rest
    vis[:150] = 200.0
    objs = ground_points(means, opa, rel, GroundParams(min_score=0.5), visibility=vis)
    assert [o.num_gaussians for o in objs] == [300]
    want = (0.6 * 200 + 1.0 * 50) / 250  # support-weighted mean relevancy
    assert objs[0].score == pytest.approx(want, rel=1e-6)
    assert objs[0].support == pytest.approx(0.9 * (150 * 200 + 150 * 50), rel=1e-6)


def test_stray_fragments_are_dropped_relative_to_the_best_object():
    means, opa, rel = two_blob_scene(np.random.default_rng(13))
    objs = ground_points(means, opa, rel, GroundParams(min_relative_support=0.5))
    assert [o.num_gaussians for o in objs] == [300]  # 100 < 0.5 x 300


def two_faces_and_a_neighbour(rng):
    """Two faces of one 0.6 m box whose shared edge is bare (closest points 0.14 m apart, more
    than eps), and a second object of the same kind 0.3 m away."""
    z = lambda n: rng.uniform(0.0, 0.6, n)  # noqa: E731
    front = np.c_[rng.uniform(0.1, 0.6, 300), np.zeros(300), z(300)]  # plane y = 0
    side = np.c_[np.zeros(300), rng.uniform(0.1, 0.6, 300), z(300)]  # plane x = 0
    other = blob((1.05, 0.3, 0.3), 200, (0.15, 0.15, 0.15), rng)  # x from 0.9: 0.3 m away
    return np.r_[front, side, other]


def test_faces_of_one_object_seen_apart_are_one_object():
    rng = np.random.default_rng(14)
    room = rng.uniform(-3.0, -1.0, (2000, 3))  # the rest of the room: irrelevant
    means = np.r_[two_faces_and_a_neighbour(rng), room]
    opa, rel = np.ones(len(means)), np.r_[np.full(800, 0.9), np.zeros(2000)]
    apart = ground_points(means, opa, rel, GroundParams(merge_gap=0.0))
    assert sorted(o.num_gaussians for o in apart) == [200, 300, 300]  # fragments, as clustered
    objs = ground_points(means, opa, rel, GroundParams(box_percentile=0.0))
    assert sorted(o.num_gaussians for o in objs) == [200, 600]  # the faces join, not the other
    box = next(o for o in objs if o.num_gaussians == 600)
    np.testing.assert_allclose(box.bbox_min, means[:600].min(0), atol=1e-9)
    np.testing.assert_allclose(box.bbox_max, means[:600].max(0), atol=1e-9)


def test_fragments_join_only_when_their_features_agree():
    rng = np.random.default_rng(15)
    means = two_faces_and_a_neighbour(rng)
    labels = np.r_[np.zeros(300), np.ones(300), np.full(200, 2)].astype(np.int64)
    same = np.tile(np.eye(3)[0], (800, 1))
    merged = merge_fragments(means, labels, 0.15, same, 0.8)
    assert len(set(merged[:600].tolist())) == 1 and merged[600] != merged[0]
    differ = np.r_[np.tile(np.eye(3)[0], (300, 1)), np.tile(np.eye(3)[1], (500, 1))]
    kept = merge_fragments(means, labels, 0.15, differ, 0.8)
    assert len(set(kept.tolist())) == 3  # the side face's features disagree: not joined
    # only the max_clusters largest take part: the two faces alone cannot meet
    assert len(set(merge_fragments(means, labels, 0.15, same, 0.8, 1).tolist())) == 3
