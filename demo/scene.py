"""The demo's world: a room with boxes wearing real photographs that ImageNet knows, and the
walk of a quadruped's head camera around it.

World frame ("map"): z up, metres, floor at z = 0, the 6 x 5 x 2.5 m room of
:mod:`m3_core.data.synthetic` centred on x = y = 0. Each object is an axis-aligned box whose
vertical faces show one scikit-image sample photograph (upright; mirrored on the faces seen
from the negative axis side, which ImageNet models do not mind). The object's ``label`` is
the ImageNet class name that EfficientNet-Lite0 gives the photograph, so it is also the text
query that should find it. The camera walks :func:`m3_core.data.synthetic.loop_trajectory`
(0.5 m high, looking around) and sees them from about 1 m.

Picked by measurement (``tests/demo`` checks it stays true): on the whole photographs
effnet says Egyptian cat 0.62 (chelsea, at 96 px), espresso 0.60 (coffee), tripod 0.94
(camera, the cameraman's tripod), moped 0.37 (stereo_motorcycle); rocket, astronaut, clock
and coins are not recognised and are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from m3_core.data.raycast import render_boxes
from m3_core.data.synthetic import ROOM, SyntheticObject, loop_trajectory, synthetic_camera
from m3_core.errors import InvalidInputError
from m3_core.types import Camera, pose_matrix

# base_link <- camera optical frame: the collector's default ``camera_extrinsic`` (the camera
# at the base origin looking along base +x), so odometry of base_link + this = camera pose.
CAMERA_EXTRINSIC = (0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5)  # x y z qx qy qz qw
ABSENT_QUERY = "grand piano"  # an ImageNet class that is nowhere in the room
HFOV_DEG = 75.0


@dataclass(frozen=True)
class PhotoObject:
    """A photo-textured box: ImageNet class (the query), skimage sample, placement (m)."""

    label: str
    sample: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]


PHOTO_OBJECTS: tuple[PhotoObject, ...] = (
    PhotoObject("Egyptian cat", "chelsea", (2.15, 1.55, 0.35), (0.9, 0.9, 0.7)),
    PhotoObject("espresso", "coffee", (-2.15, 1.55, 0.35), (0.9, 0.9, 0.7)),
    PhotoObject("tripod", "camera", (2.15, -1.5, 0.4), (0.8, 0.8, 0.8)),
    PhotoObject("moped", "stereo_motorcycle", (-2.15, -1.55, 0.35), (0.9, 0.9, 0.7)),
)


def photo(sample: str) -> np.ndarray:  # uint8 [h, w, 3]
    """A scikit-image sample photograph as RGB uint8 (grey images repeated to 3 channels)."""
    import skimage.data

    fn = getattr(skimage.data, sample, None)
    if fn is None:
        raise InvalidInputError(f"scikit-image has no sample image {sample!r}")
    img = fn()
    img = img[0] if isinstance(img, tuple) else img  # stereo pairs: the left view
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def texture(sample: str) -> np.ndarray:  # uint8 [h, w, 3]
    """The photo as the ray caster's box texture: it maps texture row 0 to the bottom of a
    vertical face (face coordinate t = z - z_min), so the photo is flipped to appear
    upright."""
    return np.ascontiguousarray(photo(sample)[::-1])


def demo_objects(objects: tuple[PhotoObject, ...] = PHOTO_OBJECTS) -> list[SyntheticObject]:
    """The photo objects as :class:`SyntheticObject` boxes (for the ray caster / ground truth)."""
    return [
        SyntheticObject(o.label, o.center, o.size, (0.5, 0.5, 0.5), "plain", texture(o.sample))
        for o in objects
    ]


def base_to_camera() -> torch.Tensor:  # [4, 4] float64
    """base_link <- camera optical frame (:data:`CAMERA_EXTRINSIC`)."""
    return pose_matrix(CAMERA_EXTRINSIC[:3], CAMERA_EXTRINSIC[3:])


def walk_poses(num_frames: int, seed: int = 0) -> list[torch.Tensor]:
    """Camera-to-world poses [4, 4] (OpenCV optical) of the walk, one per frame."""
    if num_frames < 2:
        raise InvalidInputError(f"the walk needs at least 2 frames, got {num_frames}")
    return loop_trajectory(num_frames, seed=seed)


def base_pose(c2w: torch.Tensor) -> torch.Tensor:  # [4, 4] float64 world <- base_link
    """The odometry pose of base_link for a camera pose (inverse of the extrinsic)."""
    return c2w.double() @ torch.linalg.inv(base_to_camera())


def camera(c2w: torch.Tensor, width: int, height: int) -> Camera:
    """The head camera (pinhole, 75 degree horizontal field of view) at pose ``c2w``."""
    return synthetic_camera(c2w, width, height, HFOV_DEG)


def render(
    cam: Camera, objects: list[SyntheticObject]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb uint8 [H, W, 3], depth float32 [H, W] metres (z-depth), instance int64 [H, W])
    of one view; instance ids as in :mod:`m3_core.data.raycast` (4 + k = object k)."""
    rgb, depth, inst = render_boxes(cam, ROOM, [o.box() for o in objects])
    rgb8 = np.round(rgb.numpy() * 255).astype(np.uint8)
    return rgb8, depth.numpy().astype(np.float32), inst.numpy()


def ground_truth(objects: list[SyntheticObject]) -> list[dict]:
    """[{label, center, size}] in the world frame (metres)."""
    return [{"label": o.label, "center": list(o.center), "size": list(o.size)} for o in objects]
