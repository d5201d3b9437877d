"""A wide-angle lens for the simulated robot's head camera (robot cameras are rarely pinhole).

The room is rendered with a pinhole camera; :func:`distort_view` resamples that render into
what a lens with intrinsics ``K_raw`` and plumb_bob distortion ``d`` sees along the same rays
(colour bilinear, depth nearest; z-depth is unchanged: same camera frame). The robot then
publishes the distorted image with a CameraInfo holding ``K_raw`` and ``d``, and the
collector undistorts it again (``m3_core.data.undistort``) as it would a real robot's.
"""

from __future__ import annotations

import cv2
import numpy as np

from m3_core.types import Camera

WIDE = (-0.25, 0.06, 0.0, 0.0, 0.0)  # k1 k2 p1 p2 k3: barrel, like a robot head camera


def _k(cam: Camera) -> np.ndarray:
    return cam.K.double().numpy()  # [3, 3]


def _raw_to_render(k_raw: np.ndarray, d, k_render: np.ndarray, w: int, h: int) -> np.ndarray:
    """[H, W, 2] float32: the render pixel each raw pixel sees."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.stack([u, v], -1).reshape(-1, 1, 2)
    out = cv2.undistortPoints(pts, k_raw, np.asarray(d, np.float64), P=k_render)
    return out.reshape(h, w, 2).astype(np.float32)


def raw_intrinsics(render: Camera, d=WIDE) -> np.ndarray:
    """K_raw [3, 3]: the render's intrinsics with the focal length raised until every raw
    pixel's ray falls inside the render (no invented border)."""
    w, h, k_render = render.width, render.height, _k(render)
    for scale in np.arange(1.0, 2.0, 0.02):
        k_raw = k_render.copy()
        k_raw[0, 0] *= scale
        k_raw[1, 1] *= scale
        m = _raw_to_render(k_raw, d, k_render, w, h)
        if m[..., 0].min() >= 0 and m[..., 1].min() >= 0:
            if m[..., 0].max() <= w - 1 and m[..., 1].max() <= h - 1:
                return k_raw
    raise ValueError(f"distortion {d} too strong for a {w}x{h} render")


def distort_view(
    rgb: np.ndarray,  # [H, W, C] render (any dtype cv2.remap takes)
    depth: np.ndarray,  # [H, W] float32 metres
    render: Camera,
    k_raw: np.ndarray,  # [3, 3]
    d=WIDE,
) -> tuple[np.ndarray, np.ndarray]:
    """What the distorted lens sees: (rgb [H, W, C], depth [H, W])."""
    m = _raw_to_render(k_raw, d, _k(render), render.width, render.height)
    mx, my = m[..., 0], m[..., 1]
    out = cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    dep = cv2.remap(depth, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rgb.shape), dep
