"""Image and depth files: reading, resizing and PNG encoding (numpy in, numpy out).

Conventions:
    * colour images are returned as float32 [H, W, 3] RGB in [0, 1] (8- or 16-bit files; grey
      images are repeated to 3 channels, an alpha channel is dropped);
    * depth files are either 16-bit PNGs in millimetres (``png_scale`` metres per unit) or
      ``.npy`` float arrays in metres; depth is returned as float32 [H, W] metres where
      **0 means "no measurement"** (non-finite values in a ``.npy`` become 0, as in ROS depth
      images);
    * downscaling uses area averaging for colour and nearest neighbour for depth (averaging
      across a depth edge would invent surfaces that do not exist).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from m3_core.errors import InvalidInputError

DEPTH_PNG_SCALE = 1e-3  # metres per unit of a 16-bit depth PNG (millimetres)
MAX_PNG_DEPTH_M = 65535 * DEPTH_PNG_SCALE


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, reading only its header."""
    if not path.is_file():
        raise InvalidInputError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidInputError(f"cannot read image {path}: {e}") from None


def read_image_file(path: Path) -> np.ndarray:
    """RGB float32 [H, W, 3] in [0, 1]."""
    if not path.is_file():
        raise InvalidInputError(f"image file not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InvalidInputError(f"cannot decode image {path}")
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    else:
        raise InvalidInputError(f"unsupported image type {img.dtype} in {path}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise InvalidInputError(f"image {path} has {img.shape[2]} channels")
    return img.astype(np.float32) / np.float32(scale)


def read_depth_file(path: Path, png_scale: float = DEPTH_PNG_SCALE) -> np.ndarray:
    """Depth in metres, float32 [H, W]; 0 = no measurement."""
    if not path.is_file():
        raise InvalidInputError(f"depth file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            d = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InvalidInputError(f"cannot read depth {path}: {e}") from None
        if d.ndim == 3 and d.shape[2] == 1:
            d = d[:, :, 0]
        if d.ndim != 2 or not np.issubdtype(d.dtype, np.number):
            raise InvalidInputError(f"depth {path} must be a 2D number array, got {d.shape}")
        d = d.astype(np.float32)
        d[~np.isfinite(d)] = 0.0
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise InvalidInputError(f"cannot decode depth image {path}")
        if raw.ndim != 2 or raw.dtype != np.uint16:
            raise InvalidInputError(
                f"depth image {path} must be single-channel 16-bit (millimetres), "
                f"got {raw.dtype} with shape {raw.shape}"
            )
        d = (raw.astype(np.float64) * png_scale).astype(np.float32)  # nearest float32
    if (d < 0).any():
        raise InvalidInputError(f"depth {path} has negative values")
    return d


def depth_size(path: Path) -> tuple[int, int]:
    """(width, height) of a depth file (16-bit PNG or ``.npy``), reading only its header."""
    if path.suffix.lower() != ".npy":
        return image_size(path)
    if not path.is_file():
        raise InvalidInputError(f"depth file not found: {path}")
    try:
        d = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InvalidInputError(f"cannot read depth {path}: {e}") from None
    if not (d.ndim == 2 or (d.ndim == 3 and d.shape[2] == 1)):
        raise InvalidInputError(f"depth {path} must be a 2D number array, got {d.shape}")
    return int(d.shape[1]), int(d.shape[0])


def check_size(src_wh: tuple[int, int], dst_wh: tuple[int, int], what: str) -> None:
    """Refuse a file whose size is not exactly the camera's (no resizing)."""
    if tuple(src_wh) != tuple(dst_wh):
        (sw, sh), (dw, dh) = src_wh, dst_wh
        raise InvalidInputError(f"{what} is {sw}x{sh} but the camera is {dw}x{dh}")


def check_scaled_size(src_wh: tuple[int, int], dst_wh: tuple[int, int], what: str) -> None:
    """Refuse a resize that is not the downscale ``Camera.scaled`` makes of the source size.

    A camera fitted into a (whole-pixel) maximum size is scaled by ``w / W`` or ``h / H`` with
    the other side rounded; any other size, e.g. one pixel off the source, is an error.
    """
    (sw, sh), (dw, dh) = src_wh, dst_wh
    if (sw, sh) == (dw, dh):
        return
    by_width = max(1, round(sh * (dw / sw))) == dh
    by_height = max(1, round(sw * (dh / sh))) == dw
    if dw > sw or dh > sh or not (by_width or by_height):
        raise InvalidInputError(
            f"{what} is {sw}x{sh} but the camera expects {dw}x{dh} "
            "(not a uniform downscale: inconsistent sizes)"
        )


def resize_image(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-averaged resize of [H, W, C] to [height, width, C] (no-op when sizes match)."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of [H, W] depth (no-op when sizes match)."""
    if depth.shape[1] == width and depth.shape[0] == height:
        return depth
    return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 [H, W, 3] or a grey uint8/uint16 [H, W] array."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise InvalidInputError(f"cannot encode a {array.dtype} {array.shape} array as PNG")
    return buf.tobytes()


def depth_to_png_units(depth_m: np.ndarray, png_scale: float = DEPTH_PNG_SCALE) -> np.ndarray:
    """Metres [H, W] -> uint16 [H, W] (rounded); NaN/inf and depths past the range -> 0."""
    d = np.asarray(depth_m, dtype=np.float64)
    if (d < 0).any():
        raise InvalidInputError("depth has negative values")
    units = np.where(np.isfinite(d), np.rint(d / png_scale), 0.0)
    units[units > 65535] = 0.0
    return units.astype(np.uint16)
