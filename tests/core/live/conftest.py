"""Synthetic keyframes in memory (no files): the default furnished room of
``m3_core.data.synthetic``, ray-cast along its camera loop, with label features."""

from __future__ import annotations

import math

import numpy as np
import torch

from m3_core.config import MemoryConfig
from m3_core.data.raycast import FIRST_OBJECT_ID, render_boxes
from m3_core.data.synthetic import (
    ROOM,
    SURFACES,
    default_objects,
    label_features,
    label_vectors,
    loop_trajectory,
    synthetic_camera,
)
from m3_core.live import Keyframe
from m3_core.types import ModelSpec

DIM = 16


def room_labels() -> tuple[list[str], torch.Tensor]:
    """(labels, unit label vectors [L, DIM]) of the default room."""
    labels = list(SURFACES) + [o.label for o in default_objects()]
    return labels, label_vectors(labels, DIM, 0)


def room_keyframes(
    num: int,
    width: int,
    height: int,
    *,
    stride: int = 8,
    cell_noise: float = 0.0,
    roll: float = 0.0,
) -> list[Keyframe]:
    """``num`` keyframes walking the loop of the default room, features "labels"; ``roll``
    (radians) tilts every camera about its optical axis (the loop's cameras keep the image x
    axis level, so seeds on the floor share their depth along image rows: exact ties that
    two compositors may order differently)."""
    c, s = math.cos(roll), math.sin(roll)
    tilt = torch.tensor([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    objects = default_objects()
    labels, vectors = room_labels()
    id_to_class = np.full(FIRST_OBJECT_ID + len(objects), -1, dtype=np.int64)
    for i, name in enumerate(SURFACES):
        id_to_class[SURFACES[name]] = i
    for k, o in enumerate(objects):
        id_to_class[FIRST_OBJECT_ID + k] = labels.index(o.label)
    rng = np.random.default_rng(0)
    frames = []
    for i, c2w in enumerate(loop_trajectory(num)):
        cam = synthetic_camera(c2w @ tilt, width, height)
        rgb, depth, inst = render_boxes(cam, ROOM, [o.box() for o in objects])
        feats = label_features(
            id_to_class[inst.numpy()], vectors.numpy(), stride, rng, cell_noise=cell_noise
        )
        frames.append(Keyframe(rgb, depth, cam, {"labels": torch.from_numpy(feats)}, f"f{i}"))
    return frames


def labels_config(channels: int = 8, threshold: float = 0.8) -> MemoryConfig:
    return MemoryConfig(models=[ModelSpec("labels", DIM, channels, threshold)], sh_degree=0)
