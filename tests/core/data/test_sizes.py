"""Image sizes: a file must be exactly its camera's size, or the downscale ``fit_camera``
makes of it; one pixel off is refused, never resized."""

from __future__ import annotations

import pytest
import torch

from m3_core.data.dataset import fit_camera
from m3_core.data.images import check_scaled_size, check_size
from m3_core.errors import InvalidInputError
from m3_core.types import Camera


def camera(w: int, h: int) -> Camera:
    return Camera(50.0, 50.0, w / 2, h / 2, w, h, torch.eye(4))


@pytest.mark.parametrize("size", [(48, 36), (640, 480), (81, 60), (1920, 1080), (33, 1001)])
def test_every_fitted_size_is_accepted(size):
    w, h = size
    for mw in range(1, w + 1, max(1, w // 60)):
        for mh in (1, h // 3, h // 2, h - 1, h, 10 * h):
            cam = fit_camera(camera(w, h), (mw, max(1, mh)))
            check_scaled_size((w, h), (cam.width, cam.height), "img")


@pytest.mark.parametrize(
    "src, dst",
    [((48, 36), (47, 36)), ((49, 36), (48, 36)), ((80, 60), (79, 60)), ((48, 36), (49, 36))],
)
def test_one_pixel_off_is_refused(src, dst):
    with pytest.raises(InvalidInputError, match="inconsistent sizes"):
        check_scaled_size(src, dst, "img")
    with pytest.raises(InvalidInputError, match=f"is {src[0]}x{src[1]} but the camera is"):
        check_size(src, dst, "img")


def test_halving_is_accepted():
    check_scaled_size((640, 480), (320, 240), "img")
    check_size((640, 480), (640, 480), "img")
