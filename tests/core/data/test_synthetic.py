"""The synthetic RGB-D scene: exact geometry, labels where boxes project, label features."""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from m3_core.data import (
    FeatureStore,
    SceneDataset,
    SyntheticObject,
    default_objects,
    list_feature_names,
    make_synthetic_scene,
    read_objects_json,
)
from m3_core.data.raycast import FIRST_OBJECT_ID, FLOOR_ID, WALL_ID, render_boxes
from m3_core.data.synthetic import ROOM, synthetic_camera
from m3_core.errors import InvalidInputError
from tests.core.data.conftest import yaw_c2w


def _instances(ds: SceneDataset, i: int) -> np.ndarray:
    return cv2.imread(str(ds.root / "instances" / f"{ds.frames[i].name}.png"), -1)


def test_scene_layout(synthetic_scene: SceneDataset) -> None:
    ds = synthetic_scene
    assert len(ds) == 24 and ds.test_indices == [0, 8, 16]
    cam = ds.frames[0].camera
    assert (cam.width, cam.height) == (160, 120)
    heights = torch.stack([f.camera.center for f in ds.frames])[:, 2]
    torch.testing.assert_close(heights, torch.full((24,), 0.5), atol=0.031, rtol=0)
    gt = read_objects_json(ds.root)
    assert [o["label"] for o in gt["objects"]] == [o.label for o in default_objects()]
    assert gt["objects"][0]["id"] == FIRST_OBJECT_ID
    lo, hi = ds.scene_bounds()  # the room, seen through depth (mm quantisation)
    torch.testing.assert_close(lo, torch.tensor(ROOM.lo).float(), atol=0.01, rtol=0)
    torch.testing.assert_close(hi, torch.tensor(ROOM.hi).float(), atol=0.01, rtol=0)
    assert ds.points is not None and ds.points.shape[0] > 1000


def test_depth_of_known_planes() -> None:
    """Fronto-parallel wall at x = 3 from x = 0.5: z-depth 2.5 everywhere on the wall; the
    floor at depth y_world = 0 satisfies z = h * fy / (v - cy) for a level camera."""
    cam = synthetic_camera(yaw_c2w(0.5, 0.0, 1.0, 0.0), 64, 48)
    rgb, depth, inst = render_boxes(cam, ROOM, [])
    wall = inst == WALL_ID
    assert wall.float().mean() > 0.5
    torch.testing.assert_close(depth[wall], torch.full_like(depth[wall], 2.5), atol=1e-5, rtol=0)
    floor = inst == FLOOR_ID
    v = torch.arange(48, dtype=torch.float32)[:, None].expand(48, 64) + 0.5
    expected = 1.0 * cam.fy / (v - cam.cy)
    assert floor.sum() > 50
    torch.testing.assert_close(depth[floor], expected[floor], atol=1e-4, rtol=1e-5)
    assert rgb.min() >= 0 and rgb.max() <= 1 and rgb[wall].std() > 0.02  # textured


def test_stored_depth_matches_floor_plane(synthetic_scene: SceneDataset) -> None:
    """Back-projected floor pixels of every frame lie on z = 0 (within the 1 mm PNG step)."""
    ds = synthetic_scene
    total = 0
    for i in range(0, len(ds), 3):
        depth, cam = ds.load_depth(i), ds.frames[i].camera
        floor = torch.from_numpy(_instances(ds, i).astype(np.int64)) == FLOOR_ID
        v, u = torch.nonzero(floor, as_tuple=True)
        z = depth[v, u]
        pts = torch.stack([(u + 0.5 - cam.cx) / cam.fx * z, (v + 0.5 - cam.cy) / cam.fy * z, z], 1)
        world = pts @ cam.c2w[:3, :3].T + cam.c2w[:3, 3]
        assert len(world) == 0 or world[:, 2].abs().max() < 2e-3
        total += len(world)
    assert total > 1000


def test_labels_appear_where_boxes_project(synthetic_scene: SceneDataset) -> None:
    ds = synthetic_scene
    gt = read_objects_json(ds.root)["objects"]
    for obj in gt:
        centre = torch.tensor(obj["center"])
        seen = 0
        for i, f in enumerate(ds.frames):
            cam = f.camera
            pc = f.camera.viewmat[:3, :3] @ centre + f.camera.viewmat[:3, 3]
            if pc[2] <= 0.1:
                continue
            u, v = cam.fx * pc[0] / pc[2] + cam.cx, cam.fy * pc[1] / pc[2] + cam.cy
            if not (0 <= u < cam.width and 0 <= v < cam.height):
                continue
            label = int(_instances(ds, i)[int(v), int(u)])
            if label == obj["id"]:
                seen += 1
            else:  # only another object closer than the box centre may hide it
                assert label >= FIRST_OBJECT_ID and label != obj["id"]
                assert float(ds.load_depth(i)[int(v), int(u)]) < float(pc[2])
        assert seen >= 2, f"{obj['label']} seen in {seen} frames"


def test_label_features_match_vocabulary(synthetic_scene: SceneDataset) -> None:
    ds = synthetic_scene
    assert "labels" in list_feature_names(ds.root)
    store = FeatureStore(ds.root, "labels")
    texts, emb = store.vocabulary()
    assert store.dim == 16 and emb.shape == (len(texts), 16)
    assert texts[:3] == ["floor", "wall", "ceiling"] and "chair" in texts
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(len(texts)))
    gt = read_objects_json(ds.root)
    id_to_text = {v: k for k, v in gt["surfaces"].items()}
    id_to_text.update({o["id"]: o["label"] for o in gt["objects"]})
    checked = 0
    for i in (0, 7, 13):
        feat = store.load(ds.frames[i].name)  # [15, 20, 16]
        assert feat.shape == (15, 20, 16)
        inst = _instances(ds, i).reshape(15, 8, 20, 8).transpose(0, 2, 1, 3).reshape(15, 20, 64)
        for r in range(15):
            for c in range(20):
                ids = np.unique(inst[r, c])
                if len(ids) != 1:
                    continue
                k = texts.index(id_to_text[int(ids[0])])
                cos = torch.nn.functional.cosine_similarity(feat[r, c], emb, dim=-1)
                assert int(cos.argmax()) == k and float(cos[k]) > 0.95
                checked += 1
    assert checked > 500


def test_image_texture_and_custom_objects(tmp_path: Path) -> None:
    tex = np.zeros((4, 4, 3), np.uint8)
    tex[:, :, 1] = 255  # pure green
    objs = [SyntheticObject("poster", (0.0, 0.0, 0.4), (0.6, 0.6, 0.8), texture=tex)]
    t0 = time.perf_counter()
    ds = make_synthetic_scene(
        tmp_path / "s",
        num_frames=8,
        width=64,
        height=48,
        objects=objs,
        feature_dim=8,
        feature_stride=4,
    )
    assert time.perf_counter() - t0 < 10.0
    assert FeatureStore(ds.root, "labels").load(ds.frames[0].name).shape == (12, 16, 8)
    found = 0
    for i in range(len(ds)):
        mask = _instances(ds, i) == FIRST_OBJECT_ID
        if mask.any():
            rgb = ds.load_image(i).numpy()[mask]
            assert rgb[:, 1].min() > 0.5 and max(rgb[:, 0].max(), rgb[:, 2].max()) == 0.0
            found += 1
    assert found >= 1
    with pytest.raises(InvalidInputError, match="already holds"):
        make_synthetic_scene(tmp_path / "s")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (SyntheticObject("big", (0, 0, 1), (9, 1, 1)), "does not fit"),
        (SyntheticObject("x", (0, 0, 0.5), (1, 1, 1), pattern="zebra"), "pattern"),
        (SyntheticObject("t", (0, 0, 0.5), (1, 1, 1), texture=np.zeros((2, 2))), "texture"),
    ],
)
def test_bad_objects_are_refused(tmp_path: Path, obj: SyntheticObject, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make_synthetic_scene(tmp_path / "s", num_frames=2, objects=[obj])
    assert not (tmp_path / "s").exists()


def test_trajectory_looks_around() -> None:
    """Headings cover all directions over the loop (the camera looks around)."""
    from m3_core.data.synthetic import loop_trajectory

    poses = loop_trajectory(24)
    yaw = [math.atan2(float(p[1, 2]), float(p[0, 2])) for p in poses]
    octants = {int((y + math.pi) // (math.pi / 4)) % 8 for y in yaw}
    assert len(octants) == 8


@pytest.mark.parametrize(("h", "w", "stride"), [(16, 24, 8), (13, 10, 4)])
def test_label_feature_pooling_matches_adaptive_avg_pool(h: int, w: int, stride: int) -> None:
    from m3_core.data.synthetic import FEATURE_NOISE, label_features

    rng = np.random.default_rng(0)
    classes = rng.integers(-1, 3, (h, w))
    vectors = rng.normal(size=(3, 5))
    got = label_features(classes, vectors, stride, np.random.default_rng(1))
    per_pixel = np.where((classes >= 0)[..., None], vectors[np.maximum(classes, 0)], 0.0)
    per_pixel = per_pixel + FEATURE_NOISE * np.random.default_rng(1).standard_normal((h, w, 5))
    size = (math.ceil(h / stride), math.ceil(w / stride))
    ref = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(per_pixel).permute(2, 0, 1)[None], size
    )[0].permute(1, 2, 0)
    torch.testing.assert_close(torch.from_numpy(got), ref.float(), atol=1e-6, rtol=0)
