"""A posed image dataset on disk: frames, the train/test split, image/depth loading, bounds.

Conventions:
    * ``Frame.camera.c2w`` is camera-to-world in the OpenCV optical convention (see
      :mod:`m3_core.types`), float32; readers convert their own convention at the edge.
    * ``Frame.camera`` has the size training works at. When it is smaller than the image file
      (``load_dataset(max_size=...)`` downscaled it, intrinsics scaled with it),
      :meth:`SceneDataset.load_image` resizes with area averaging and
      :meth:`SceneDataset.load_depth` with nearest neighbour.
    * Frames are sorted by name (the image stem, unique in a dataset); indices refer to that
      order. Precomputed features live in ``features_dir / <model name> / <name>.npy``
      (see :mod:`m3_core.data.features`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from m3_core.data.images import (
    DEPTH_PNG_SCALE,
    check_scaled_size,
    check_size,
    depth_size,
    image_size,
    read_depth_file,
    read_image_file,
    resize_depth,
    resize_image,
)
from m3_core.data.undistort import LensModel, RectifierCache
from m3_core.errors import InvalidInputError
from m3_core.types import Camera

DEFAULT_MAX_SIZE = (980, 720)  # (width, height) cap of the paper's training images


@dataclass(frozen=True)
class Frame:
    """One posed image. ``name`` is the image file stem (unique within its dataset)."""

    name: str
    image_path: Path
    camera: Camera  # pinhole (of the undistorted image when ``lens`` is set)
    depth_path: Path | None = None
    lens: LensModel | None = None  # the raw distorted lens: images are undistorted on loading


@dataclass
class SceneDataset:
    """Frames sorted by name, a split, and optional sparse points for initialisation.

    ``points`` [M, 3] float32 world points (COLMAP points3D or a nerfstudio ``ply_file_path``),
    ``point_colors`` [M, 3] float32 in [0, 1] or None. ``depth_scale``: metres per unit of
    16-bit depth PNGs.
    """

    root: Path
    frames: list[Frame]
    test_indices: list[int] = field(default_factory=list)
    points: torch.Tensor | None = None  # [M, 3]
    point_colors: torch.Tensor | None = None  # [M, 3]
    depth_scale: float = DEPTH_PNG_SCALE
    source: str = ""
    world_frame: str = ""  # the ROS frame of the poses when recorded by the collector
    rectifiers: RectifierCache = field(default_factory=RectifierCache, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        names = [f.name for f in self.frames]
        if names != sorted(names):
            raise InvalidInputError("dataset frames must be sorted by name")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise InvalidInputError(f"duplicate frame names (image stems) in dataset: {dup[:5]}")
        bad = [i for i in self.test_indices if not 0 <= i < len(self.frames)]
        if bad:
            raise InvalidInputError(f"test indices out of range: {bad[:5]}")
        self.test_indices = sorted(set(self.test_indices))

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def train_indices(self) -> list[int]:
        test = set(self.test_indices)
        return [i for i in range(len(self.frames)) if i not in test]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    @property
    def cameras(self) -> list[Camera]:
        return [f.camera for f in self.frames]

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def index_of(self, name: str) -> int:
        for i, f in enumerate(self.frames):
            if f.name == name:
                return i
        raise InvalidInputError(f"no frame named {name!r} in {self.root}")

    def load_image(self, i: int) -> torch.Tensor:
        """RGB float32 [H, W, 3] in [0, 1] at the camera's size."""
        f = self.frames[i]
        img = read_image_file(f.image_path)
        if f.lens is not None:
            img = self.rectifiers.get(f.lens).rgb(img)
        cam = f.camera
        check_scaled_size((img.shape[1], img.shape[0]), (cam.width, cam.height), str(f.image_path))
        return torch.from_numpy(np.ascontiguousarray(resize_image(img, cam.width, cam.height)))

    def load_depth(self, i: int) -> torch.Tensor | None:
        """Depth in metres, float32 [H, W] at the camera's size (0 = no measurement), or None."""
        f = self.frames[i]
        if f.depth_path is None:
            return None
        d = read_depth_file(f.depth_path, self.depth_scale)
        if f.lens is not None:
            d = self.rectifiers.get(f.lens).depth(d)
        cam = f.camera
        check_scaled_size((d.shape[1], d.shape[0]), (cam.width, cam.height), str(f.depth_path))
        return torch.from_numpy(np.ascontiguousarray(resize_depth(d, cam.width, cam.height)))

    def scene_bounds(
        self, *, depth_stride: int = 8, max_depth_frames: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Axis-aligned world bounds (lo [3], hi [3]) float32 of what the dataset sees.

        Covers the camera centres, the sparse ``points`` and, for frames with depth, the
        back-projected valid depth pixels (every ``depth_stride``-th pixel of up to
        ``max_depth_frames`` evenly spread frames).
        """
        if not self.frames:
            raise InvalidInputError("dataset has no frames")
        parts = [torch.stack([f.camera.center.float().cpu() for f in self.frames])]
        if self.points is not None and len(self.points):
            parts.append(self.points.float().cpu())
        with_depth = [i for i, f in enumerate(self.frames) if f.depth_path is not None]
        if with_depth:
            step = max(1, len(with_depth) // max(1, max_depth_frames))
            for i in with_depth[::step][:max_depth_frames]:
                parts.append(self._depth_points(i, depth_stride))
        pts = torch.cat(parts)  # [N, 3]
        return pts.min(dim=0).values, pts.max(dim=0).values

    def _depth_points(self, i: int, stride: int) -> torch.Tensor:  # [N, 3]
        depth = self.load_depth(i)
        assert depth is not None
        cam = self.frames[i].camera
        v, u = torch.meshgrid(
            torch.arange(0, cam.height, stride), torch.arange(0, cam.width, stride), indexing="ij"
        )
        z = depth[v, u]
        ok = z > 0
        z, u, v = z[ok], u[ok].float() + 0.5, v[ok].float() + 0.5
        xyz = torch.stack([(u - cam.cx) / cam.fx * z, (v - cam.cy) / cam.fy * z, z], dim=-1)
        c2w = cam.c2w.float().cpu()
        return xyz @ c2w[:3, :3].T + c2w[:3, 3]


def fit_scale(width: int, height: int, max_size: tuple[int, int] | None) -> float:
    """The downscale factor (<= 1) that makes width x height fit in max_size (w, h)."""
    if max_size is None:
        return 1.0
    mw, mh = max_size
    if mw <= 0 or mh <= 0:
        raise InvalidInputError(f"max_size must be positive, got {max_size}")
    return min(1.0, mw / width, mh / height)


def fit_camera(camera: Camera, max_size: tuple[int, int] | None) -> Camera:
    """``camera`` downscaled (intrinsics scaled) so that its image fits in max_size."""
    s = fit_scale(camera.width, camera.height, max_size)
    if s >= 1.0:
        return camera
    return camera.scaled(s)  # round(W * s) <= max width, round(H * s) <= max height


def check_image_files(frames: list[Frame], *, sizes_known: bool = True) -> None:
    """Refuse missing/unreadable images and depth files, and files whose size is not exactly
    the camera's (the raw lens's for distorted frames): nothing is resized to fit. Run on the
    frames as read, before :func:`fit_camera`."""
    for f in frames:
        wh = (f.lens.width, f.lens.height) if f.lens is not None else None
        wh = wh or (f.camera.width, f.camera.height)
        size = image_size(f.image_path)
        if sizes_known:
            check_size(size, wh, str(f.image_path))
        if f.depth_path is not None:
            check_size(depth_size(f.depth_path), size, str(f.depth_path))


def load_dataset(
    path: str | Path, *, max_size: tuple[int, int] | None = DEFAULT_MAX_SIZE
) -> SceneDataset:
    """Open a dataset folder (or its ``transforms.json``), autodetecting the format.

    nerfstudio: ``transforms.json`` in the folder. COLMAP: a model (``cameras.bin|txt``, ...)
    in ``sparse/0``, ``sparse`` or the folder itself, with images in ``images/``. Cameras are
    downscaled (intrinsics scaled) so images fit ``max_size`` = (width, height); None keeps
    full resolution.
    """
    from m3_core.data.colmap import find_colmap_model, read_colmap_dataset
    from m3_core.data.transforms import read_transforms_dataset

    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return read_transforms_dataset(p, max_size=max_size)
    if not p.is_dir():
        raise InvalidInputError(f"dataset not found: {p}")
    if (p / "transforms.json").is_file():
        return read_transforms_dataset(p / "transforms.json", max_size=max_size)
    model = find_colmap_model(p)
    if model is not None:
        return read_colmap_dataset(p, model, max_size=max_size)
    raise InvalidInputError(
        f"{p} is not a dataset: expected transforms.json (nerfstudio) or a COLMAP model "
        "(sparse/0/cameras.bin or cameras.txt)"
    )
