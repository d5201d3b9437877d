"""Rectification of distorted camera images against OpenCV's forward projection: a rectified
pixel must show what the raw camera saw along the same ray. Tolerances: cv2.remap interpolates
on a 1/32 px grid (INTER_BITS = 5), so one remap is exact to ~0.03 px, two to ~0.05 px."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from m3_core.data.undistort import LensModel, Rectifier, RectifierCache
from m3_core.errors import InvalidInputError
from m3_core.types import pose_matrix

W, H = 160, 120
K = (120.0, 0.0, 81.0, 0.0, 118.0, 58.5, 0.0, 0.0, 1.0)
EYE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
LENSES = {
    "plumb_bob": (-0.28, 0.09, 0.001, -0.0015, -0.012),
    "rational_polynomial": (-0.2, 0.05, 0.001, 0.0, 0.0, 0.05, 0.01, 0.0),
    "equidistant": (0.05, -0.02, 0.004, -0.001),
}


def lens(model: str, r=EYE, p=(0.0,) * 12) -> LensModel:
    return LensModel(model, LENSES[model], K, tuple(r), tuple(p), W, H)


def project_raw(model: str, pts_cam: np.ndarray) -> np.ndarray:
    """Raw (distorted) pixels of camera-frame points [N, 3], OpenCV's own projection."""
    k, d = np.asarray(K).reshape(3, 3), np.asarray(LENSES[model])
    if model == "equidistant":
        uv, _ = cv2.fisheye.projectPoints(pts_cam[:, None], np.zeros(3), np.zeros(3), k, d)
    else:
        uv, _ = cv2.projectPoints(pts_cam, np.zeros(3), np.zeros(3), k, d)
    return uv.reshape(-1, 2)


def coordinate_image() -> np.ndarray:
    """[H, W, 2] float32: each raw pixel holds its own (u, v): bilinear sampling is exact."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return np.stack([u, v], -1)


@pytest.mark.parametrize("model", list(LENSES))
@pytest.mark.parametrize("tilt", [False, True])
def test_rectified_pixels_see_what_the_raw_camera_saw(model, tilt):
    r = Rotation.from_euler("xyz", [2.0, -1.5, 1.0], degrees=True).as_matrix() if tilt else None
    rect = Rectifier(lens(model, EYE if r is None else r.ravel()))
    out = rect.rgb(coordinate_image())  # [H, W, 2]: the raw pixel each rectified pixel shows
    # rays through every 7th rectified pixel, back into the raw camera frame
    v, u = np.mgrid[3:H:7, 3:W:7].reshape(2, -1)
    rays = np.linalg.inv(rect.new_k) @ np.stack([u, v, np.ones_like(u)]).astype(np.float64)
    if r is not None:
        rays = r.T @ rays
    want = project_raw(model, rays.T)
    inside = (want >= 1).all(1) & (want[:, 0] < W - 2) & (want[:, 1] < H - 2)
    assert inside.mean() > 0.9  # the chosen K keeps the view inside the raw image
    np.testing.assert_allclose(out[v, u][inside], want[inside], atol=0.035, rtol=0)


@pytest.mark.parametrize("model", ["plumb_bob", "equidistant"])
def test_the_rectified_camera_and_pose_project_world_points_where_the_image_shows_them(model):
    r = Rotation.from_euler("xyz", [3.0, 1.0, -2.0], degrees=True).as_matrix()
    rect = Rectifier(lens(model, r.ravel()))
    c2w = pose_matrix([1.0, -0.5, 0.3], Rotation.from_euler("z", 30, degrees=True).as_quat())
    cam = rect.camera(c2w)
    rng = np.random.default_rng(0)
    pts_cam = np.c_[rng.uniform(-0.4, 0.4, (50, 2)), rng.uniform(1.0, 3.0, 50)]
    pts_world = (c2w.numpy() @ np.c_[pts_cam, np.ones(50)].T)[:3].T
    # rectified camera: pinhole projection of the world points
    w2c = torch.linalg.inv(cam.c2w.double()).numpy()
    pc = (w2c @ np.c_[pts_world, np.ones(50)].T)[:3]
    uv_rect = (cam.K.double().numpy() @ pc)[:2] / pc[2]
    got = cv2.remap(rect.rgb(coordinate_image()), *uv_rect.astype(np.float32), cv2.INTER_LINEAR)
    np.testing.assert_allclose(got.reshape(-1, 2), project_raw(model, pts_cam), atol=0.05, rtol=0)


def test_depth_is_remapped_nearest_with_zero_outside():
    rect = Rectifier(
        LensModel(
            "plumb_bob",
            (0.15, 0.0, 0.0, 0.0, 0.0),
            K,
            EYE,
            K[:3] + (0.0,) + K[3:6] + (0.0,) + K[6:] + (0.0,),
            W,
            H,
        )
    )
    depth = np.where(np.arange(W)[None, :] < W // 2, 1.5, 4.0).astype(np.float32).repeat(H, 0)
    out = rect.depth(depth)
    assert set(np.unique(out)) <= {0.0, 1.5, 4.0}  # no blend of foreground and background
    assert (out == 0.0).any() and (out > 0).mean() > 0.8  # P = K: corners see outside the raw


def test_zero_distortion_is_the_identity():
    rect = Rectifier(LensModel("plumb_bob", (0.0,) * 5, K, (0.0,) * 9, (0.0,) * 12, W, H))
    img = np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)
    assert rect.identity and rect.rgb(img) is img
    c2w = pose_matrix([1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0])
    cam = rect.camera(c2w)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (120.0, 118.0, 81.0, 58.5)
    torch.testing.assert_close(cam.c2w, c2w, atol=0, rtol=0)


@pytest.mark.parametrize(
    "lm, message",
    [
        (LensModel("kannala", (0.1,) * 4, K, EYE, (0.0,) * 12, W, H), "not supported"),
        (LensModel("equidistant", (0.1,) * 5, K, EYE, (0.0,) * 12, W, H), "needs (4,)"),
        (LensModel("plumb_bob", (0.1,) * 5, K, (2.0,) + EYE[1:], (0.0,) * 12, W, H), "rotation"),
        (LensModel("plumb_bob", (float("nan"),) * 5, K, EYE, (0.0,) * 12, W, H), "not finite"),
        (LensModel("plumb_bob", (0.1,) * 5, (0.0,) * 9, EYE, (0.0,) * 12, W, H), "fx, fy > 0"),
    ],
)
def test_bad_camera_info_is_a_clear_error(lm, message):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Rectifier(lm)


def test_an_image_of_the_wrong_size_is_refused_and_the_cache_reuses_tables():
    cache = RectifierCache(max_models=2)
    a = cache.get(lens("plumb_bob"))
    assert cache.get(lens("plumb_bob")) is a
    with pytest.raises(InvalidInputError, match="image is 80x60 but camera_info says 160x120"):
        a.rgb(np.zeros((60, 80, 3), np.uint8))
    cache.get(lens("equidistant"))
    cache.get(lens("rational_polynomial"))
    assert len(cache.items) == 2 and lens("plumb_bob") not in cache.items
