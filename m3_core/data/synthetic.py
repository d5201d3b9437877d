"""Procedural posed RGB-D scenes with ground truth, for tests, benchmarks and the demo.

A 6 x 5 x 2.5 m room (world z up, floor at z = 0, centred on x = y = 0) holds labelled boxes;
a camera at quadruped height (0.5 m) walks an elliptic loop and looks around. Views are
ray-cast (:mod:`m3_core.data.raycast`), so RGB, depth and instance ids are exact.

:func:`make_synthetic_scene` writes, in ``out_dir``::

    transforms.json, images/, depth/      a nerfstudio dataset (via TransformsWriter)
    sparse_pc.ply                         points back-projected from depth (initialisation)
    instances/<name>.png                  uint16 instance ids (0 none, 1 floor, 2 wall,
                                          3 ceiling, 4 + k = object k of objects.json)
    objects.json                          {"room": {center, size}, "surfaces": {...},
                                           "objects": [{id, label, center, size}]} (world GT)
    features/labels/                      a precomputed feature store (see features.py):
                                          per-pixel "label features" = a fixed random unit
                                          vector per label + N(0, 0.05^2) noise, average-pooled
                                          to the feature stride; vocabulary.npz maps each
                                          label name to its vector; meta.json
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from m3_core.data.dataset import SceneDataset
from m3_core.data.features import FeatureStore
from m3_core.data.images import encode_png
from m3_core.data.raycast import (
    CEILING_ID,
    FIRST_OBJECT_ID,
    FLOOR_ID,
    PATTERNS,
    WALL_ID,
    Box,
    render_boxes,
)
from m3_core.data.transforms import TransformsWriter, read_transforms_dataset
from m3_core.errors import InvalidInputError
from m3_core.io import atomic_write_bytes, atomic_write_text
from m3_core.types import Camera

ROOM = Box(center=(0.0, 0.0, 1.25), size=(6.0, 5.0, 2.5), color=(0.85, 0.8, 0.7))
SURFACES = {"floor": FLOOR_ID, "wall": WALL_ID, "ceiling": CEILING_ID}
CAMERA_HEIGHT = 0.5
FEATURE_NOISE = 0.05


@dataclass(frozen=True)
class SyntheticObject:
    """A labelled box standing in the room. ``color`` RGB in [0, 1]; ``pattern`` one of
    plain/checker/stripes/dots; ``texture`` optional uint8 [th, tw, 3] image on every face."""

    label: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pattern: str = "plain"
    texture: np.ndarray | None = None

    def box(self) -> Box:
        return Box(self.center, self.size, self.color, self.pattern, self.texture)


def default_objects() -> list[SyntheticObject]:
    """Five boxes of different sizes, colours and patterns, clear of the camera loop."""
    return [
        SyntheticObject("chair", (2.2, 1.6, 0.45), (0.6, 0.6, 0.9), (0.8, 0.15, 0.1), "checker"),
        SyntheticObject("sofa", (-2.1, 1.7, 0.4), (1.4, 0.8, 0.8), (0.15, 0.3, 0.8), "stripes"),
        SyntheticObject("plant", (2.3, -1.7, 0.6), (0.5, 0.5, 1.2), (0.15, 0.6, 0.2), "dots"),
        SyntheticObject("table", (-2.0, -1.6, 0.375), (1.0, 0.7, 0.75), (0.9, 0.75, 0.1)),
        SyntheticObject("box", (0.0, 0.0, 0.25), (0.5, 0.5, 0.5), (0.6, 0.2, 0.7), "checker"),
    ]


def look_at_c2w(position: Sequence[float], yaw: float, pitch: float = 0.0) -> torch.Tensor:
    """OpenCV camera-to-world [4, 4] float32 at ``position`` looking along yaw (about +z, from
    +x) and pitch (up positive); the image x axis stays horizontal."""
    f = torch.tensor(
        [math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)],
        dtype=torch.float64,
    )
    right = torch.linalg.cross(f, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(f, right)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2] = right, down, f
    c2w[:3, 3] = torch.tensor(list(position), dtype=torch.float64)
    return c2w.float()


def loop_trajectory(num_frames: int, *, seed: int = 0) -> list[torch.Tensor]:
    """Camera-to-world poses [4, 4] walking an ellipse (1.6 x 1.2 m) at 0.5 m height, heading
    along the loop and swinging the view left/right (+-1.4 rad) and up/down (+-0.15 rad)."""
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(num_frames):
        th = 2 * math.pi * i / num_frames
        pos = (1.6 * math.cos(th), 1.2 * math.sin(th), CAMERA_HEIGHT)
        pos = tuple(p + float(j) for p, j in zip(pos, rng.uniform(-0.03, 0.03, 3)))
        heading = math.atan2(1.2 * math.cos(th), -1.6 * math.sin(th))
        yaw = heading + 1.4 * math.sin(4 * th + 1.0) + float(rng.uniform(-0.05, 0.05))
        pitch = 0.15 * math.sin(2 * th)
        poses.append(look_at_c2w(pos, yaw, pitch))
    return poses


def synthetic_camera(c2w: torch.Tensor, width: int, height: int, hfov_deg: float = 75.0):
    fx = width / (2 * math.tan(math.radians(hfov_deg) / 2))
    return Camera(fx, fx, width / 2, height / 2, width, height, c2w)


def label_vectors(labels: list[str], dim: int, seed: int) -> torch.Tensor:  # [L, D]
    """A fixed random unit vector per label (seeded)."""
    g = torch.Generator().manual_seed(seed + 7919)
    v = torch.randn(len(labels), dim, generator=g, dtype=torch.float32)
    return v / v.norm(dim=-1, keepdim=True)


def label_features(
    class_map: np.ndarray,
    vectors: np.ndarray,
    stride: int,
    rng: np.random.Generator,
    *,
    pixel_noise: float = FEATURE_NOISE,
    cell_noise: float = 0.0,
) -> np.ndarray:
    """class_map int [H, W] (-1 = none) -> features float32 [ceil(H/s), ceil(W/s), D]: the
    label's vector (0 for none) + noise per pixel, average-pooled over adaptive bins (the
    bins of ``F.adaptive_avg_pool2d``: cell i spans pixels floor(i H / h) .. ceil((i+1) H / h)),
    then N(0, cell_noise^2) per cell (a real backbone's patch-level variation: pixel noise
    averages away over a cell)."""
    h, w = class_map.shape
    feat = np.where((class_map >= 0)[..., None], vectors[np.maximum(class_map, 0)], 0.0)
    feat = feat + pixel_noise * rng.standard_normal(feat.shape)  # [H, W, D]
    oh, ow = math.ceil(h / stride), math.ceil(w / stride)
    rows = np.stack([feat[(i * h) // oh : -((-(i + 1) * h) // oh)].mean(0) for i in range(oh)])
    cols = [rows[:, (j * w) // ow : -((-(j + 1) * w) // ow)].mean(1) for j in range(ow)]
    out = np.stack(cols, axis=1)  # [oh, ow, D]
    if cell_noise > 0:
        out = out + cell_noise * rng.standard_normal(out.shape)
    return out.astype(np.float32)


def _check_objects(objects: Sequence[SyntheticObject]) -> None:
    lo, hi = np.array(ROOM.lo), np.array(ROOM.hi)
    for o in objects:
        if o.pattern not in PATTERNS:
            raise InvalidInputError(f"object {o.label!r}: pattern must be one of {PATTERNS}")
        if min(o.size) <= 0 or not o.label.strip():
            raise InvalidInputError(f"object {o.label!r}: needs a label and a positive size")
        b = o.box()
        if (np.array(b.lo) < lo - 1e-9).any() or (np.array(b.hi) > hi + 1e-9).any():
            raise InvalidInputError(f"object {o.label!r} does not fit in the room {ROOM.size}")
        if o.texture is not None:
            t = np.asarray(o.texture)
            if t.ndim != 3 or t.shape[2] != 3 or t.dtype != np.uint8:
                raise InvalidInputError(f"object {o.label!r}: texture must be uint8 [h, w, 3]")


def make_synthetic_scene(
    out_dir: str | Path,
    *,
    num_frames: int = 24,
    width: int = 160,
    height: int = 120,
    objects: Sequence[SyntheticObject] | None = None,
    seed: int = 0,
    feature_dim: int = 16,
    feature_stride: int = 8,
    feature_noise: float = FEATURE_NOISE,
    cell_noise: float = 0.0,
    on_frame: Callable[[int, int], None] | None = None,
) -> SceneDataset:
    """Render and write a synthetic dataset (see module doc) and return it, opened.
    ``on_frame(done, total)`` is called after each frame is written (progress bars)."""
    out = Path(out_dir)
    if (out / "transforms.json").exists():
        raise InvalidInputError(f"{out} already holds a dataset; pick an empty folder")
    objects = default_objects() if objects is None else list(objects)
    _check_objects(objects)
    if num_frames < 1 or width < 8 or height < 8 or feature_dim < 1 or feature_stride < 1:
        raise InvalidInputError("num_frames, feature_dim, stride >= 1 and image >= 8x8 needed")
    if not (feature_noise >= 0 and cell_noise >= 0):
        raise InvalidInputError("feature_noise and cell_noise must be >= 0")
    labels = list(SURFACES) + list(dict.fromkeys(o.label for o in objects))
    vectors = label_vectors(labels, feature_dim, seed)  # [L, D]
    # instance id -> label index (-1 for "nothing hit")
    id_to_class = np.full(FIRST_OBJECT_ID + len(objects), -1, dtype=np.int64)
    for i, name in enumerate(SURFACES):
        id_to_class[SURFACES[name]] = i
    for k, o in enumerate(objects):
        id_to_class[FIRST_OBJECT_ID + k] = labels.index(o.label)

    writer = TransformsWriter(out)
    store = FeatureStore(out, "labels")
    rng = np.random.default_rng(seed)
    boxes = [o.box() for o in objects]
    cloud_xyz, cloud_rgb = [], []
    for i, c2w in enumerate(loop_trajectory(num_frames, seed=seed)):
        cam = synthetic_camera(c2w, width, height)
        rgb, depth, inst = (t.numpy() for t in render_boxes(cam, ROOM, boxes))
        name = f"frame_{i:05d}"
        rgb8 = np.round(rgb * 255).astype(np.uint8)
        writer.add_frame(name, rgb8, cam, depth)
        atomic_write_bytes(out / "instances" / f"{name}.png", encode_png(inst.astype(np.uint16)))
        feats = label_features(
            id_to_class[inst], vectors.numpy(), feature_stride, rng,
            pixel_noise=feature_noise, cell_noise=cell_noise,
        )  # fmt: skip
        store.save(name, feats)
        xyz, col = _backproject(cam, depth, rgb8, stride=max(1, width // 32))
        cloud_xyz.append(xyz)
        cloud_rgb.append(col)
        if on_frame is not None:
            on_frame(i + 1, num_frames)
    writer.set_points(np.concatenate(cloud_xyz), np.concatenate(cloud_rgb))
    store.save_vocabulary(labels, vectors)
    store.save_meta(
        {
            "model": "synthetic-labels",
            "dim": feature_dim,
            "stride": feature_stride,
            "noise": feature_noise,
            "cell_noise": cell_noise,
            "labels": labels,
        }
    )
    gt = {
        "room": {"center": list(ROOM.center), "size": list(ROOM.size)},
        "surfaces": SURFACES,
        "objects": [
            {
                "id": FIRST_OBJECT_ID + k,
                "label": o.label,
                "center": list(o.center),
                "size": list(o.size),
            }
            for k, o in enumerate(objects)
        ],
    }
    atomic_write_text(out / "objects.json", json.dumps(gt, indent=1))
    return read_transforms_dataset(out / "transforms.json")


def read_objects_json(root: str | Path) -> dict:
    """The ground truth written by :func:`make_synthetic_scene` (see module doc)."""
    p = Path(root) / "objects.json"
    if not p.is_file():
        raise InvalidInputError(f"no objects.json in {root} (not a synthetic scene?)")
    return json.loads(p.read_text(encoding="utf-8"))


def _backproject(
    cam: Camera, depth: np.ndarray, rgb8: np.ndarray, stride: int
) -> tuple[np.ndarray, np.ndarray]:  # xyz [N, 3] float64 world, rgb uint8 [N, 3]
    v, u = np.meshgrid(
        np.arange(0, cam.height, stride), np.arange(0, cam.width, stride), indexing="ij"
    )
    z = depth[v, u]
    ok = z > 0
    z, uu, vv = z[ok], u[ok] + 0.5, v[ok] + 0.5
    xyz = np.stack([(uu - cam.cx) / cam.fx * z, (vv - cam.cy) / cam.fy * z, z], axis=-1)
    c2w = cam.c2w.double().numpy()
    return xyz @ c2w[:3, :3].T + c2w[:3, 3], rgb8[v[ok], u[ok]]
