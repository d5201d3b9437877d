"""Lens undistortion: robot cameras (wide-angle, fisheye) -> the pinhole images M3 trains on.

The splat rasterizer models a pinhole camera, so a distorted image must be rectified before it
is kept, as ROS ``image_proc`` does: ``Rectifier`` builds OpenCV remap tables once per camera
model and applies them to colour (bilinear) and depth (nearest: no invented depths between a
foreground and a background). Conventions are ROS ``sensor_msgs/CameraInfo``'s:

- ``model``: ``plumb_bob`` (k1 k2 p1 p2 k3) or ``rational_polynomial`` (+ k4 k5 k6), both
  OpenCV's ``cv2.undistort*`` model; ``equidistant`` (k1..k4, OpenCV's ``cv2.fisheye``);
- ``K`` [3, 3] of the raw image; ``R`` [3, 3] the rectification rotation (identity for a mono
  camera; all zeros = unset = identity); ``P`` [3, 4] whose left 3x3 is the rectified image's
  intrinsics (all zeros = unset: chosen so that every output pixel sees the scene, no black
  border).

The rectified camera looks along ``R``: its camera-to-world pose is ``c2w @ [R^T 0; 0 1]``.
All-zero distortion with identity ``R`` is the identity (no remap, the pose and K unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from m3_core.errors import InvalidInputError
from m3_core.types import Camera

_EYE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
MODELS = {"plumb_bob": (4, 5, 8, 12, 14), "rational_polynomial": (8, 12, 14), "equidistant": (4,)}


@dataclass(frozen=True)
class LensModel:
    """A camera as CameraInfo describes it (hashable: the key of the remap cache)."""

    model: str
    d: tuple[float, ...]
    k: tuple[float, ...]  # row-major 3x3
    r: tuple[float, ...]  # row-major 3x3, zeros = identity
    p: tuple[float, ...]  # row-major 3x4, zeros = unset
    width: int
    height: int

    @staticmethod
    def mono(
        model: str, d, fx: float, fy: float, cx: float, cy: float, width: int, height: int
    ) -> LensModel:
        """A single camera (no rectification rotation, P unset) from its intrinsics."""
        k = (float(fx), 0.0, float(cx), 0.0, float(fy), float(cy), 0.0, 0.0, 1.0)
        return LensModel(model, tuple(float(v) for v in d), k, _EYE, (0.0,) * 12, width, height)

    def is_pinhole(self) -> bool:
        r = np.asarray(self.r).reshape(3, 3) if any(self.r) else np.eye(3)
        return not any(self.d) and np.allclose(r, np.eye(3))


class Rectifier:
    """Remaps images of one ``LensModel`` to its pinhole twin; ``camera(c2w)`` gives that
    twin's ``Camera``. Build once per model (the tables cost ~10 ms at 640x480)."""

    def __init__(self, lens: LensModel) -> None:
        self.lens, w, h = lens, lens.width, lens.height
        k = np.asarray(lens.k, np.float64).reshape(3, 3)
        r = np.asarray(lens.r, np.float64).reshape(3, 3) if any(lens.r) else np.eye(3)
        d = np.asarray(lens.d, np.float64)
        if w <= 0 or h <= 0 or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise InvalidInputError("camera_info needs width, height and a K with fx, fy > 0")
        if not np.isfinite(d).all() or not np.isfinite(r).all():
            raise InvalidInputError("camera_info distortion or R is not finite")
        if lens.is_pinhole():
            self.new_k, self.r, self.maps = k, np.eye(3), None
            return
        if lens.model not in MODELS:
            known = ", ".join(MODELS)
            raise InvalidInputError(
                f"distortion model {lens.model!r} is not supported (use {known}, or publish "
                "rectified images with zero distortion)"
            )
        if len(d) not in MODELS[lens.model]:
            raise InvalidInputError(
                f"{lens.model} needs {MODELS[lens.model]} coefficients, got {len(d)}"
            )
        det = np.linalg.det(r)
        if not np.allclose(r.T @ r, np.eye(3), atol=1e-3) or abs(det - 1.0) > 1e-3:
            raise InvalidInputError("camera_info R is not a rotation")
        p = np.asarray(lens.p, np.float64).reshape(3, 4)[:, :3] if any(lens.p) else None
        fisheye = lens.model == "equidistant"
        if p is None or p[0, 0] <= 0 or p[1, 1] <= 0:
            p = self._valid_k(k, d, r, fisheye)
        if fisheye:
            m1, m2 = cv2.fisheye.initUndistortRectifyMap(k, d, r, p, (w, h), cv2.CV_32FC1)
        else:
            m1, m2 = cv2.initUndistortRectifyMap(k, d, r, p, (w, h), cv2.CV_32FC1)
        self.new_k, self.r, self.maps = p, r, (m1, m2)

    def _valid_k(self, k: np.ndarray, d: np.ndarray, r: np.ndarray, fisheye: bool) -> np.ndarray:
        w, h = self.lens.width, self.lens.height
        if fisheye:
            return cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                k, d, (w, h), r, balance=0.0
            )
        new_k, _ = cv2.getOptimalNewCameraMatrix(k, d, (w, h), 0.0, (w, h))
        return new_k

    @property
    def identity(self) -> bool:
        return self.maps is None

    def rgb(self, image: np.ndarray) -> np.ndarray:
        """[H, W, C] (any dtype cv2.remap takes) -> the rectified [H, W, C], bilinear."""
        if self.maps is None:
            return image
        self._check(image)
        out = cv2.remap(image, *self.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(image.shape)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """[H, W] metres -> rectified, nearest neighbour; outside the raw image: 0 (no depth)."""
        if self.maps is None:
            return depth
        self._check(depth)
        return cv2.remap(depth, *self.maps, cv2.INTER_NEAREST, borderValue=0.0)

    def camera(self, c2w: torch.Tensor) -> Camera:
        """The rectified pinhole camera, for the raw camera's pose ``c2w`` [4, 4]."""
        rot = torch.eye(4, dtype=c2w.dtype)
        rot[:3, :3] = torch.from_numpy(self.r.T.copy()).to(c2w.dtype)
        k, lens = self.new_k, self.lens
        pose = c2w if self.identity else c2w @ rot
        return Camera(k[0, 0], k[1, 1], k[0, 2], k[1, 2], lens.width, lens.height, pose)

    def _check(self, image: np.ndarray) -> None:
        if image.shape[:2] != (self.lens.height, self.lens.width):
            raise InvalidInputError(
                f"image is {image.shape[1]}x{image.shape[0]} but camera_info says "
                f"{self.lens.width}x{self.lens.height}"
            )


class RectifierCache:
    """One ``Rectifier`` per lens model seen (a robot has a few cameras; bounded anyway)."""

    def __init__(self, max_models: int = 8) -> None:
        self.max_models, self.items = max_models, {}

    def get(self, lens: LensModel) -> Rectifier:
        rect = self.items.get(lens)
        if rect is None:
            if len(self.items) >= self.max_models:
                self.items.pop(next(iter(self.items)))
            rect = self.items[lens] = Rectifier(lens)
        return rect
