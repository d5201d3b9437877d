"""``Keyframe``: what the live memory takes per update (one posed RGB-D frame + feature maps).

* ``image``    [H, W, 3] RGB, float in [0, 1] (uint8 is converted)
* ``depth``    [H, W] metres along the optical axis; 0 (or NaN / inf) = no measurement
* ``camera``   :class:`~m3_core.types.Camera` (intrinsics, size W x H, camera-to-world, OpenCV)
* ``features`` model name -> feature grid [h, w, d_m] covering the whole image (cell (i, j)
  centred on pixel ((j + 0.5) W / w, (i + 0.5) H / h), as the trainer samples them); an
  all-zero cell means "no feature here"
* ``name``     optional frame name (kept in the snapshot's metadata)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from m3_core.errors import InvalidInputError
from m3_core.types import Camera


@dataclass
class Keyframe:
    image: torch.Tensor  # [H, W, 3]
    depth: torch.Tensor  # [H, W]
    camera: Camera
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [h, w, d]
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.camera, Camera):
            raise InvalidInputError(f"keyframe camera must be a Camera, got {type(self.camera)}")
        h, w = int(self.camera.height), int(self.camera.width)
        img = torch.as_tensor(self.image)
        if tuple(img.shape) != (h, w, 3):
            raise InvalidInputError(
                f"keyframe image must be [{h}, {w}, 3] (the camera's size), got {tuple(img.shape)}"
            )
        if img.dtype == torch.uint8:
            img = img.float() / 255.0
        if not img.is_floating_point() or not bool(torch.isfinite(img).all()):
            raise InvalidInputError("keyframe image must be finite float in [0, 1] or uint8")
        depth = torch.as_tensor(self.depth)
        if tuple(depth.shape) != (h, w) or not depth.is_floating_point():
            raise InvalidInputError(
                f"keyframe depth must be float [{h}, {w}] metres, got {tuple(depth.shape)} "
                f"{depth.dtype}"
            )
        depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth)).float()
        if bool((depth < 0).any()):
            raise InvalidInputError("keyframe depth has negative values (metres expected)")
        for name, grid in self.features.items():
            if not isinstance(grid, torch.Tensor) or grid.dim() != 3 or grid.shape[2] < 1:
                shape = tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid)
                raise InvalidInputError(f"feature {name!r} must be a grid [h, w, d], got {shape}")
            if not grid.is_floating_point() or not bool(torch.isfinite(grid).all()):
                raise InvalidInputError(f"feature {name!r} must be finite floating point")
        self.image = img.clamp(0.0, 1.0)
        self.depth = depth


def keyframe_from_dataset(dataset, i: int, feature_names: list[str] | tuple[str, ...]) -> Keyframe:
    """Frame ``i`` of a :class:`~m3_core.data.dataset.SceneDataset` with its stored feature
    grids (``DATA/features/<name>/``) as a :class:`Keyframe` (a recorded walk, replayed)."""
    from m3_core.data.features import FeatureStore

    frame = dataset.frames[i]
    depth = dataset.load_depth(i)
    if depth is None:
        raise InvalidInputError(f"frame {frame.name!r} has no depth; the live memory needs it")
    stem = frame.image_path.stem
    feats = {n: FeatureStore(dataset.root, n).load(stem).float() for n in feature_names}
    return Keyframe(dataset.load_image(i), depth, frame.camera, feats, frame.name)
