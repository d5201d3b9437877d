"""COLMAP models (text or binary, read with ``pycolmap``) as a :class:`SceneDataset`.

Layout: ``<root>/images/<image name>`` and the model in ``<root>/sparse/0``, ``<root>/sparse``
or ``<root>`` itself. COLMAP stores world-to-camera poses in the OpenCV convention; they are
inverted into camera-to-world. Cameras: PINHOLE, SIMPLE_PINHOLE, and the distorted SIMPLE_RADIAL,
RADIAL, OPENCV, FULL_OPENCV, OPENCV_FISHEYE, whose images are undistorted when loaded
(``m3_core.data.undistort``; the frame's camera is the undistorted pinhole one). Other models
are refused. ``points3D`` (xyz, colour) become the dataset's
initial points.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from m3_core.data.dataset import Frame, SceneDataset, check_image_files, fit_camera
from m3_core.data.split import split_indices
from m3_core.data.undistort import LensModel, RectifierCache
from m3_core.errors import InvalidInputError
from m3_core.types import Camera

# COLMAP model -> (fx, fy, cx, cy, distortion) from its params, and the OpenCV lens model
_MODELS = {
    "SIMPLE_PINHOLE": (lambda p: (p[0], p[0], p[1], p[2], ()), ""),
    "PINHOLE": (lambda p: (*p[:4], ()), ""),
    "SIMPLE_RADIAL": (lambda p: (p[0], p[0], p[1], p[2], (p[3], 0, 0, 0, 0)), "plumb_bob"),
    "RADIAL": (lambda p: (p[0], p[0], p[1], p[2], (p[3], p[4], 0, 0, 0)), "plumb_bob"),
    "OPENCV": (lambda p: (*p[:4], (*p[4:8], 0)), "plumb_bob"),
    "FULL_OPENCV": (lambda p: (*p[:4], tuple(p[4:12])), "rational_polynomial"),
    "OPENCV_FISHEYE": (lambda p: (*p[:4], tuple(p[4:8])), "equidistant"),
}


def find_colmap_model(root: Path) -> Path | None:
    """The folder holding ``cameras.bin`` or ``cameras.txt`` under root, or None."""
    for cand in (root / "sparse" / "0", root / "sparse", root):
        if (cand / "cameras.bin").is_file() or (cand / "cameras.txt").is_file():
            return cand
    return None


def _camera(cam, c2w: torch.Tensor, where: str, rectifiers: RectifierCache):
    """(pinhole Camera, raw LensModel or None) of a pycolmap.Camera."""
    model = cam.model.name if hasattr(cam.model, "name") else str(cam.model)
    if model not in _MODELS:
        raise InvalidInputError(
            f"{where}: COLMAP camera model {model} is not supported "
            f"(use {', '.join(_MODELS)}, or undistort the images first)"
        )
    params, lens_model = _MODELS[model]
    fx, fy, cx, cy, d = params([float(v) for v in cam.params])
    w, h = int(cam.width), int(cam.height)
    try:
        if not any(d):
            return Camera(fx, fy, cx, cy, w, h, c2w), None
        lens = LensModel.mono(lens_model, d, fx, fy, cx, cy, w, h)
        return rectifiers.get(lens).camera(c2w), lens
    except InvalidInputError as e:
        raise InvalidInputError(f"{where}: {e}") from None


def read_colmap(
    model_dir: Path, rectifiers: RectifierCache | None = None
) -> tuple[list, np.ndarray, np.ndarray]:
    """(registered images as (name, pinhole Camera, raw LensModel or None), points xyz [M, 3]
    float32, rgb [M, 3] uint8). Distorted lenses get their remap tables in ``rectifiers``."""
    import pycolmap

    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # pycolmap raises plain RuntimeError/ValueError on bad files
        raise InvalidInputError(f"cannot read COLMAP model in {model_dir}: {e}") from None
    out: list[tuple[str, Camera, LensModel | None]] = []
    rectifiers = RectifierCache() if rectifiers is None else rectifiers
    for _, img in sorted(rec.images.items()):
        if not img.has_pose:
            continue
        where = f"COLMAP image {img.name!r}"
        cfw = img.cam_from_world
        cfw = cfw() if callable(cfw) else cfw
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :] = torch.from_numpy(np.asarray(cfw.matrix(), dtype=np.float64))
        if not torch.isfinite(w2c).all():
            raise InvalidInputError(f"{where}: pose contains NaN or infinite values")
        c2w = torch.linalg.inv(w2c).to(torch.float32)
        out.append((img.name, *_camera(rec.cameras[img.camera_id], c2w, where, rectifiers)))
    pts = list(rec.points3D.values())
    xyz = np.array([p.xyz for p in pts], dtype=np.float32).reshape(-1, 3)
    rgb = np.array([p.color for p in pts], dtype=np.uint8).reshape(-1, 3)
    if not np.isfinite(xyz).all():
        raise InvalidInputError(f"COLMAP model in {model_dir} has NaN points")
    return out, xyz, rgb


def read_colmap_dataset(
    root: Path, model_dir: Path | None = None, *, max_size: tuple[int, int] | None = None
) -> SceneDataset:
    """A :class:`SceneDataset` from ``root/images`` and a COLMAP model (see module doc)."""
    root = Path(root)
    model_dir = model_dir or find_colmap_model(root)
    if model_dir is None:
        raise InvalidInputError(f"no COLMAP model (cameras.bin/txt) under {root}")
    rectifiers = RectifierCache()  # built while reading, used again when images are loaded
    images, xyz, rgb = read_colmap(model_dir, rectifiers)
    if not images:
        raise InvalidInputError(f"COLMAP model in {model_dir} has no registered images")
    image_dir = root / "images"
    frames = [Frame(Path(n).stem, image_dir / n, cam, None, lens) for n, cam, lens in images]
    check_image_files(frames)
    frames = sorted(frames, key=lambda f: f.name)
    frames = [dataclasses.replace(f, camera=fit_camera(f.camera, max_size)) for f in frames]
    _, test = split_indices([f.name for f in frames])
    points = torch.from_numpy(xyz)
    colors = torch.from_numpy(rgb.astype(np.float32) / 255.0)
    return SceneDataset(root, frames, test, points, colors, source="colmap", rectifiers=rectifiers)
