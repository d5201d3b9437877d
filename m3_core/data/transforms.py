"""nerfstudio ``transforms.json`` datasets: the reader, and the atomic writer the collector uses.

Format (the subset read and written here)::

    {"camera_model": "OPENCV",                  # or OPENCV_FISHEYE; equirectangular refused
     "fl_x": ..., "fl_y": ..., "cx": ..., "cy": ..., "w": ..., "h": ...,   # global or per frame
     "depth_unit_scale_factor": 0.001,          # metres per unit of 16-bit depth PNGs (optional)
     "ply_file_path": "sparse_pc.ply",          # optional initial points (x y z red green blue)
     "test_filenames": ["images/frame_000000.png", ...],   # optional explicit test views
     "world_frame": "odom",                     # optional: the ROS frame of the poses (m3)
     "frames": [{"file_path": "images/frame_000000.png", "depth_file_path": "depth/...png",
                 "transform_matrix": [[...4x4 camera-to-world, OpenGL convention...]]}]}

``transform_matrix`` uses the nerfstudio / OpenGL camera axes (x right, y up, z back); frames
are converted to the library's OpenCV convention with :func:`m3_core.types.opengl_to_opencv`.
Paths are relative to the folder of ``transforms.json``. Per-frame intrinsics override the
global ones. Distorted images (``k1 k2 p1 p2 [k3]``, or ``k1..k4`` with ``OPENCV_FISHEYE``) are
undistorted when loaded (``m3_core.data.undistort``): a frame's camera is then the pinhole
camera of the undistorted image, and ``Frame.lens`` the raw one. Blender-synthetic files
(``camera_angle_x``, ``file_path`` without extension, size from the image) are read too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3_core.data.dataset import Frame, SceneDataset, check_image_files, fit_camera
from m3_core.data.images import DEPTH_PNG_SCALE, depth_to_png_units, encode_png, image_size
from m3_core.data.split import split_indices
from m3_core.data.undistort import LensModel, RectifierCache
from m3_core.errors import InvalidInputError
from m3_core.io import atomic_path, atomic_write_bytes, atomic_write_text
from m3_core.names import check_name
from m3_core.types import Camera, opencv_to_opengl, opengl_to_opencv

_REFUSED_MODELS = ("FISHEYE", "EQUIRECTANGULAR", "OMNIDIRECTIONALSTEREO")


def _num(d: dict, g: dict, key: str, where: str, default: float | None = None) -> float:
    v = d.get(key, g.get(key, default))
    if v is None:
        raise InvalidInputError(f"{where}: missing camera field {key!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{where}: camera field {key!r} is not a number: {v!r}") from None


def _side(d: dict, g: dict, key: str, where: str) -> int:
    """Image width or height: a whole number of pixels > 0 (NaN, inf, 47.5, 0 are refused)."""
    v = _num(d, g, key, where)
    if not (math.isfinite(v) and v == int(v) and v > 0):
        raise InvalidInputError(
            f"{where}: camera field {key!r} must be a whole number > 0, got {v}"
        )
    return int(v)


def _lens(fr: dict, meta: dict, k: tuple, w: int, h: int, where: str) -> LensModel | None:
    """The raw lens when the frame's images are distorted (OPENCV: k1 k2 p1 p2 [k3];
    OPENCV_FISHEYE: k1..k4; per-frame values override global ones), else None."""
    fisheye = str(meta.get("camera_model", "OPENCV")).upper() == "OPENCV_FISHEYE"
    keys = ("k1", "k2", "k3", "k4") if fisheye else ("k1", "k2", "p1", "p2", "k3")
    d = tuple(_num(fr, meta, key, where, default=0.0) for key in keys)
    if not any(d):
        return None
    return LensModel.mono("equidistant" if fisheye else "plumb_bob", d, *k, w, h)


def _parse_frame(
    fr: Any, meta: dict, base: Path, rectifiers: RectifierCache | None = None
) -> Frame:
    if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str):
        raise InvalidInputError(f"transforms.json: a frame without a file_path string: {fr!r:.80}")
    rel = fr["file_path"]
    where = f"transforms.json frame {rel!r}"
    image_path = base / rel
    if not image_path.suffix and image_path.with_suffix(".png").is_file():
        image_path = image_path.with_suffix(".png")  # Blender-style paths without extension
    try:
        m = torch.tensor(fr["transform_matrix"], dtype=torch.float64)
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(f"{where}: missing or malformed transform_matrix") from None
    if m.shape == (3, 4):
        m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=m.dtype)])
    if m.shape != (4, 4):
        raise InvalidInputError(f"{where}: transform_matrix must be 4x4, got {tuple(m.shape)}")
    if "w" in fr or "w" in meta:
        w, h = _side(fr, meta, "w", where), _side(fr, meta, "h", where)
    else:
        w, h = image_size(image_path)
    if "fl_x" not in fr and "fl_x" not in meta and "camera_angle_x" in meta:  # Blender style
        fx = 0.5 * w / math.tan(0.5 * _num(meta, meta, "camera_angle_x", where))
    else:
        fx = _num(fr, meta, "fl_x", where)
    fy = _num(fr, meta, "fl_y", where, default=fx)
    cx = _num(fr, meta, "cx", where, default=w / 2.0)
    cy = _num(fr, meta, "cy", where, default=h / 2.0)
    c2w = opengl_to_opencv(m).to(torch.float32)
    try:
        lens = _lens(fr, meta, (fx, fy, cx, cy), w, h, where)
        if lens is None:
            cam = Camera(fx, fy, cx, cy, w, h, c2w)
        else:  # the images are undistorted on loading: the frame's camera is the pinhole one
            cam = (rectifiers or RectifierCache()).get(lens).camera(c2w)
    except InvalidInputError as e:
        raise InvalidInputError(f"{where}: {e}") from None
    depth = fr.get("depth_file_path")
    return Frame(image_path.stem, image_path, cam, base / depth if depth else None, lens)


def _check_model(meta: dict) -> None:
    model = str(meta.get("camera_model", "OPENCV")).upper()
    if any(model.startswith(r) for r in _REFUSED_MODELS):
        raise InvalidInputError(
            f"camera_model {model} is not supported (OPENCV, PINHOLE or OPENCV_FISHEYE)"
        )


def read_transforms_json(path: Path) -> dict:
    """The parsed JSON object, with readable errors."""
    if not path.is_file():
        raise InvalidInputError(f"transforms file not found: {path}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise InvalidInputError(f"{path}: expected an object with a 'frames' list")
    return meta


def parse_frames(meta: dict, base: Path, rectifiers: RectifierCache | None = None) -> list[Frame]:
    """Frames of a parsed transforms.json (file order; nothing on disk is checked). Distorted
    lenses get their remap tables in ``rectifiers`` (one per distinct lens)."""
    _check_model(meta)
    rectifiers = RectifierCache() if rectifiers is None else rectifiers
    return [_parse_frame(fr, meta, base, rectifiers) for fr in meta["frames"]]


def read_points_ply(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(xyz [M, 3] float32, rgb [M, 3] float32 in [0, 1] or None) of a PLY point cloud."""
    from plyfile import PlyData, PlyParseError

    if not path.is_file():
        raise InvalidInputError(f"point cloud not found: {path}")
    try:
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float32)
        names = v.data.dtype.names or ()
        rgb = None
        if {"red", "green", "blue"} <= set(names):
            rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.float32) / 255
    except (KeyError, ValueError, OSError, PlyParseError) as e:
        raise InvalidInputError(f"cannot read point cloud {path}: {e}") from None
    if not np.isfinite(xyz).all():
        raise InvalidInputError(f"point cloud {path} has NaN or infinite points")
    return torch.from_numpy(xyz), None if rgb is None else torch.from_numpy(rgb)


def _test_filenames(meta: dict, path: Path) -> list[str] | None:
    names = meta.get("test_filenames")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidInputError(f"{path}: test_filenames must be a list of file paths")
    return names


def _depth_scale(meta: dict, path: Path) -> float:
    """Metres per unit of the 16-bit depth PNGs: a finite number > 0."""
    v = meta.get("depth_unit_scale_factor", DEPTH_PNG_SCALE)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if not ok:
        raise InvalidInputError(
            f"{path}: depth_unit_scale_factor must be a number > 0 (metres per depth unit, "
            f"0.001 for millimetres), got {v!r:.80}"
        )
    return float(v)


def read_transforms_dataset(
    path: Path, *, max_size: tuple[int, int] | None = None
) -> SceneDataset:
    """A :class:`SceneDataset` from a nerfstudio ``transforms.json`` (see module doc)."""
    path = Path(path)
    meta = read_transforms_json(path)
    base = path.parent
    rectifiers = RectifierCache()  # built while parsing, used again when images are loaded
    frames = parse_frames(meta, base, rectifiers)
    if not frames:
        raise InvalidInputError(f"{path} lists no frames")
    check_image_files(frames)
    frames = sorted(frames, key=lambda f: f.name)
    frames = [dataclasses.replace(f, camera=fit_camera(f.camera, max_size)) for f in frames]
    test_files = _test_filenames(meta, path)
    _, test = split_indices([f.name for f in frames], test_files)
    scale = _depth_scale(meta, path)
    world = meta.get("world_frame", "")
    if not isinstance(world, str):
        raise InvalidInputError(f"{path}: world_frame must be a string, got {world!r:.80}")
    points = colors = None
    ply = meta.get("ply_file_path")
    if ply:
        if not isinstance(ply, str):
            raise InvalidInputError(f"{path}: ply_file_path must be a string, got {ply!r:.80}")
        points, colors = read_points_ply(base / ply)
    return SceneDataset(base, frames, test, points, colors, scale, "nerfstudio", world, rectifiers)


class TransformsWriter:
    """Append keyframes to a nerfstudio dataset folder, crash-safe.

    Each :meth:`add_frame` writes ``images/<name>.png`` then ``depth/<name>.png`` (16-bit,
    millimetres) and only then rewrites ``transforms.json``, every file atomically; a crash at
    any point leaves the previous valid dataset (at worst plus an unreferenced image).
    Opening a folder that already has a ``transforms.json`` resumes it: its frames and other
    keys are kept. Safe to call from several threads of one process (one writer per folder).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._json = self.root / "transforms.json"
        self._lock = threading.Lock()
        if self._json.exists():
            self._meta = read_transforms_json(self._json)
            self._frames = parse_frames(self._meta, self.root)
        else:
            self._meta = {
                "camera_model": "OPENCV",
                "depth_unit_scale_factor": DEPTH_PNG_SCALE,
                "frames": [],
            }
            self._frames = []
        self._names = {f.name for f in self._frames}

    @property
    def frames(self) -> list[Frame]:
        """Frames written so far (file order)."""
        return list(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __contains__(self, name: str) -> bool:
        """Whether a frame called ``name`` is already written."""
        return name in self._names

    def next_name(self) -> str:
        """The first free ``frame_NNNNNN`` name (counting on from the frames already there)."""
        n = len(self._frames)
        while f"frame_{n:06d}" in self._names:
            n += 1
        return f"frame_{n:06d}"

    def add_frame(
        self,
        name: str | None,
        rgb: np.ndarray | torch.Tensor,
        camera: Camera,
        depth_m: np.ndarray | torch.Tensor | None = None,
        world_frame: str = "",
    ) -> Frame:
        """Record one keyframe; ``rgb`` uint8 [H, W, 3], ``depth_m`` metres [H, W] or None.

        ``name`` None picks :meth:`next_name`. NaN/inf depth and depth beyond 65.535 m are
        stored as 0 (no measurement); negative depth is refused. ``world_frame`` (the ROS
        frame of the poses, e.g. "odom") is kept as the dataset's ``world_frame``; a keyframe
        in another frame than the dataset's is refused. Returns the written Frame.
        """
        rgb_np = _as_numpy(rgb)
        if rgb_np.dtype != np.uint8 or rgb_np.ndim != 3 or rgb_np.shape[2] != 3:
            raise InvalidInputError(
                f"rgb must be uint8 [H, W, 3], got {rgb_np.dtype} {tuple(rgb_np.shape)}"
            )
        h, w = rgb_np.shape[:2]
        if (w, h) != (camera.width, camera.height):
            raise InvalidInputError(
                f"rgb is {w}x{h} but the camera is {camera.width}x{camera.height}"
            )
        depth_png = None
        if depth_m is not None:
            d = _as_numpy(depth_m).astype(np.float64)
            if d.shape != (h, w):
                raise InvalidInputError(f"depth must be [{h}, {w}], got {tuple(d.shape)}")
            depth_png = encode_png(depth_to_png_units(d))
        image_png = encode_png(np.ascontiguousarray(rgb_np))
        c2w_gl = opencv_to_opengl(camera.c2w.detach().cpu().to(torch.float64))
        with self._lock:
            name = self.next_name() if name is None else name
            check_name(name, "frame name")
            if name in self._names:
                raise InvalidInputError(f"a frame named {name!r} already exists in {self.root}")
            have = self._meta.get("world_frame", "")
            if world_frame and have and world_frame != have:
                raise InvalidInputError(
                    f"{self.root.name} is recorded in frame {have!r}; a keyframe in "
                    f"{world_frame!r} cannot join it (start another recording)"
                )
            entry: dict[str, Any] = {
                "file_path": f"images/{name}.png",
                "transform_matrix": c2w_gl.tolist(),
                "fl_x": float(camera.fx),
                "fl_y": float(camera.fy),
                "cx": float(camera.cx),
                "cy": float(camera.cy),
                "w": int(w),
                "h": int(h),
            }
            atomic_write_bytes(self.root / entry["file_path"], image_png)
            if depth_png is not None:
                entry["depth_file_path"] = f"depth/{name}.png"
                atomic_write_bytes(self.root / entry["depth_file_path"], depth_png)
            meta = dict(self._meta)
            if world_frame:
                meta["world_frame"] = world_frame
            meta["frames"] = [*self._meta["frames"], entry]
            atomic_write_text(self._json, json.dumps(meta, indent=1))
            self._meta = meta
            frame = _parse_frame(entry, meta, self.root)
            self._frames.append(frame)
            self._names.add(name)
        return frame

    def set_points(self, xyz: np.ndarray | torch.Tensor, rgb: np.ndarray | None = None) -> None:
        """Write ``sparse_pc.ply`` (xyz [M, 3] world, rgb uint8 [M, 3]) as initial points."""
        from plyfile import PlyData, PlyElement

        p = _as_numpy(xyz).astype(np.float32)
        if p.ndim != 2 or p.shape[1] != 3 or not np.isfinite(p).all():
            raise InvalidInputError(f"points must be finite [M, 3], got {p.shape}")
        fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
        if rgb is not None:
            c = _as_numpy(rgb)
            if c.shape != p.shape or c.dtype != np.uint8:
                raise InvalidInputError("point colours must be uint8 [M, 3] like the points")
            fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        arr = np.empty(len(p), dtype=fields)
        for k, ax in enumerate("xyz"):
            arr[ax] = p[:, k]
        if rgb is not None:
            for k, ch in enumerate(("red", "green", "blue")):
                arr[ch] = c[:, k]
        with self._lock:
            with atomic_path(self.root / "sparse_pc.ply") as tmp:
                PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp))
            meta = {**self._meta, "ply_file_path": "sparse_pc.ply"}
            atomic_write_text(self._json, json.dumps(meta, indent=1))
            self._meta = meta


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
