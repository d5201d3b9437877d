"""A tiny ray caster for box worlds (the synthetic scenes): RGB, depth and instance ids.

World: z up, metres. The room is the inside of an axis-aligned box with its floor at z = 0;
objects are axis-aligned boxes. Instance ids: 0 = nothing hit, 1 floor, 2 wall, 3 ceiling,
``FIRST_OBJECT_ID + k`` = object k. Depth is the z-depth along the camera's optical axis
(what an RGB-D camera reports), in metres. Pixel (u, v) is sampled at its centre
(u + 0.5, v + 0.5), as in :class:`m3_core.types.Camera`. Computed in numpy float64
(single-threaded: fast for small images and immune to thread oversubscription).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from m3_core.types import Camera

FLOOR_ID, WALL_ID, CEILING_ID = 1, 2, 3
FIRST_OBJECT_ID = 4
PATTERNS = ("plain", "checker", "stripes", "dots")


@dataclass(frozen=True)
class Box:
    """An axis-aligned textured box; ``texture`` uint8 [th, tw, 3] (optional) is mapped onto
    every face (stretched to it), else ``pattern`` modulates ``color`` (RGB in [0, 1])."""

    center: tuple[float, float, float]
    size: tuple[float, float, float]
    color: tuple[float, float, float]
    pattern: str = "plain"
    texture: np.ndarray | None = None

    @property
    def lo(self) -> tuple[float, float, float]:
        return tuple(c - s / 2 for c, s in zip(self.center, self.size))  # type: ignore[return-value]

    @property
    def hi(self) -> tuple[float, float, float]:
        return tuple(c + s / 2 for c, s in zip(self.center, self.size))  # type: ignore[return-value]


def camera_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(origin [3], directions [H*W, 3]) in world, float64; a direction has camera z = 1."""
    v, u = np.meshgrid(
        np.arange(camera.height, dtype=np.float64) + 0.5,
        np.arange(camera.width, dtype=np.float64) + 0.5,
        indexing="ij",
    )
    d_cam = np.stack(
        [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones_like(u)], axis=-1
    ).reshape(-1, 3)
    c2w = camera.c2w.detach().cpu().to(torch.float64).numpy()
    return c2w[:3, 3], d_cam @ c2w[:3, :3].T


def _slabs(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Slab test of rays o + t d ([P, 3]) against boxes [K, 3]: (t_min, t_max) [P, K, 3]."""
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    inv = (1.0 / safe)[:, None, :]  # [P, 1, 3]
    t1 = (lo[None] - o) * inv
    t2 = (hi[None] - o) * inv
    return np.minimum(t1, t2), np.maximum(t1, t2)


def _hash_noise(cells: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random values in [0, 1) per integer cell [..., 3] -> [...]."""
    x = np.sin(cells @ np.array([12.9898, 78.233, 37.719])) * 43758.5453
    return x - np.floor(x)


def _pattern(name: str, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Brightness factor [P] of a procedural pattern at face coordinates (s, t) in metres."""
    if name == "checker":
        return np.where((np.floor(s / 0.2) + np.floor(t / 0.2)) % 2 == 0, 1.0, 0.6)
    if name == "stripes":
        return 0.75 + 0.25 * np.sin(2 * math.pi * (s + 0.5 * t) / 0.25)
    if name == "dots":
        ds = s / 0.15 - np.round(s / 0.15)
        dt = t / 0.15 - np.round(t / 0.15)
        return np.where(ds * ds + dt * dt < 0.09, 0.55, 1.0)
    return np.ones_like(s)


_IN_FACE = np.array([[1, 2], [0, 2], [0, 1]])  # the two in-face axes per normal axis


def _shade(box: Box, point: np.ndarray, axis: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """rgb [P, 3] of hits ``point`` [P, 3] on faces with normal ``axis`` [P] (sign [P])."""
    size = np.array(box.size)
    other = _IN_FACE[axis]  # [P, 2]
    st = np.take_along_axis(point - np.array(box.lo), other, axis=1)  # [P, 2] metres on face
    if box.texture is not None:
        tex = np.asarray(box.texture)
        tex = tex / 255.0 if tex.dtype == np.uint8 else tex.astype(np.float64)
        th, tw = tex.shape[:2]
        rel = np.clip(st / size[other], 0, 1 - 1e-9)  # [P, 2]
        base = tex[(rel[:, 1] * th).astype(int), (rel[:, 0] * tw).astype(int)]  # [P, 3]
    else:
        base = np.array(box.color)[None] * _pattern(box.pattern, st[:, 0], st[:, 1])[:, None]
    noise = _hash_noise(np.floor(point * 25.0)) * 0.16 - 0.08  # fine grain, +-8 %
    light = np.array([0.85, 0.95, 1.0])[axis] * np.where(sign > 0, 1.0, 0.9)
    return np.clip(base * (light + noise)[:, None], 0, 1)


def _face_sign(d: np.ndarray, axis: np.ndarray) -> np.ndarray:  # [P]: sign of the face normal
    return -np.sign(np.take_along_axis(d, axis[:, None], axis=1)[:, 0])


def render_boxes(
    camera: Camera, room: Box, objects: list[Box]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray-cast a view from inside ``room``: (rgb float32 [H, W, 3] in [0, 1],
    depth float32 [H, W] metres (0 where nothing is hit), instance int64 [H, W])."""
    o, d = camera_rays(camera)
    p = d.shape[0]
    _, tmax = _slabs(o, d, np.array([room.lo]), np.array([room.hi]))
    best_ax = tmax[:, 0].argmin(axis=-1)  # exit face of the room (camera inside)
    t_room = tmax[np.arange(p), 0, best_ax]
    best_t = np.where(t_room > 0, t_room, np.inf)
    best_sg = _face_sign(d, best_ax)  # inward normal
    room_id = np.where(best_ax != 2, WALL_ID, np.where(best_sg > 0, FLOOR_ID, CEILING_ID))
    best_id = np.where(np.isfinite(best_t), room_id, 0)
    if objects:
        lo = np.array([b.lo for b in objects])
        hi = np.array([b.hi for b in objects])
        tmin, tmax = _slabs(o, d, lo, hi)
        ax_near = tmin.argmax(axis=-1)  # [P, K]
        t_near = np.take_along_axis(tmin, ax_near[..., None], axis=-1)[..., 0]
        t_far = tmax.min(axis=-1)
        t_obj = np.where((t_near <= t_far) & (t_near > 1e-9), t_near, np.inf)
        k_o = t_obj.argmin(axis=-1)  # [P]
        t_o = t_obj[np.arange(p), k_o]
        ax_o = ax_near[np.arange(p), k_o]
        closer = t_o < best_t
        best_t = np.where(closer, t_o, best_t)
        best_id = np.where(closer, FIRST_OBJECT_ID + k_o, best_id)
        best_ax = np.where(closer, ax_o, best_ax)
        best_sg = np.where(closer, _face_sign(d, ax_o), best_sg)
    hit = np.isfinite(best_t)
    point = o + np.where(hit, best_t, 0.0)[:, None] * d  # [P, 3]
    rgb = np.zeros((p, 3))
    looks = [(i, _room_face(room, i)) for i in (FLOOR_ID, WALL_ID, CEILING_ID)]
    for iid, box in looks + [(FIRST_OBJECT_ID + k, b) for k, b in enumerate(objects)]:
        m = best_id == iid
        if m.any():
            rgb[m] = _shade(box, point[m], best_ax[m], best_sg[m])
    depth = np.where(hit, best_t, 0.0)
    h, w = camera.height, camera.width
    return (
        torch.from_numpy(rgb.reshape(h, w, 3).astype(np.float32)),
        torch.from_numpy(depth.reshape(h, w).astype(np.float32)),
        torch.from_numpy(best_id.reshape(h, w).astype(np.int64)),
    )


def _room_face(room: Box, iid: int) -> Box:
    """The room's look per surface: tiled floor, striped walls, plain ceiling."""
    if iid == FLOOR_ID:
        return Box(room.center, room.size, (0.55, 0.45, 0.35), "checker")
    if iid == WALL_ID:
        return Box(room.center, room.size, room.color, "stripes")
    return Box(room.center, room.size, (0.92, 0.92, 0.9), "plain")
