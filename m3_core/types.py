"""Core value types shared by every m3_core package.

Coordinate convention (ONE for the whole library):
    ``Camera.c2w`` is a 4x4 camera-to-world matrix in the **OpenCV / ROS optical** convention:
    x right, y down, z forward (REP-103 ``*_optical_frame``). World coordinates are whatever the
    dataset's poses use (for ROS data: the ``map`` frame). nerfstudio / OpenGL cameras
    (x right, y up, z backward) are converted with :func:`opengl_to_opencv` at the edges only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from m3_core.errors import InvalidInputError

# Flip of the y and z camera axes: OpenGL (x right, y up, z back) <-> OpenCV (x right, y down,
# z forward). It is its own inverse.
_GL_CV_FLIP = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def opengl_to_opencv(c2w: torch.Tensor) -> torch.Tensor:
    """Convert camera-to-world matrices [..., 4, 4] between the OpenGL and OpenCV conventions.

    The same call converts back (the flip is an involution).
    """
    flip = _GL_CV_FLIP.to(dtype=c2w.dtype, device=c2w.device)
    return c2w @ flip


opencv_to_opengl = opengl_to_opencv


def validate_rigid(c2w: torch.Tensor, *, atol: float = 1e-3, what: str = "pose") -> None:
    """Raise InvalidInputError unless ``c2w`` [4, 4] is finite and a rigid transform."""
    if c2w.shape != (4, 4):
        raise InvalidInputError(f"{what} must be a 4x4 matrix, got shape {tuple(c2w.shape)}")
    m = c2w.detach().to(torch.float64, copy=False)
    if not torch.isfinite(m).all():
        raise InvalidInputError(f"{what} contains NaN or infinite values")
    if not torch.allclose(m[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=m.dtype), atol=atol):
        raise InvalidInputError(f"{what} last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    r = m[:3, :3]
    eye = torch.eye(3, dtype=m.dtype)
    if not torch.allclose(r.T @ r, eye, atol=atol) or abs(float(torch.det(r)) - 1.0) > atol:
        raise InvalidInputError(f"{what} rotation is not orthonormal with det +1 (non-rigid)")


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: intrinsics in pixels, image size, and its pose.

    ``c2w`` [4, 4] float tensor, camera-to-world, OpenCV optical convention (see module doc).
    Pixel (u, v) has its centre at (u + 0.5, v + 0.5), as in gsplat.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    c2w: torch.Tensor  # [4, 4]

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            v = float(getattr(self, name))
            if not (v == v and abs(v) != float("inf")):
                raise InvalidInputError(f"camera {name} must be finite, got {v}")
        if self.fx <= 0 or self.fy <= 0:
            raise InvalidInputError(f"focal lengths must be positive, got {self.fx}, {self.fy}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise InvalidInputError(f"image size must be positive, got {self.width}x{self.height}")
        validate_rigid(self.c2w, what="camera pose")

    @property
    def K(self) -> torch.Tensor:  # [3, 3]
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
            dtype=torch.float32,
            device=self.c2w.device,
        )

    @property
    def viewmat(self) -> torch.Tensor:  # [4, 4] world-to-camera
        return torch.linalg.inv(self.c2w.to(torch.float64)).to(torch.float32)

    @property
    def center(self) -> torch.Tensor:  # [3]
        return self.c2w[:3, 3]

    def scaled(self, factor: float) -> Camera:
        """The same camera at ``factor`` times the resolution (intrinsics scale with it)."""
        w, h = max(1, round(self.width * factor)), max(1, round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        return Camera(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, w, h, self.c2w)

    def to(self, device: torch.device | str) -> Camera:
        return Camera(
            self.fx, self.fy, self.cx, self.cy, self.width, self.height, self.c2w.to(device)
        )


@dataclass(frozen=True)
class ModelSpec:
    """One foundation model distilled into the memory.

    name: registry / feature-folder name ("clip", "dinov2", "effnet", ...)
    dim: the model's feature dimension d_m (rows of its PSC bank)
    query_channels: s_m, the slice of the per-Gaussian principal query given to this model
    psc_threshold: theta_m of Algorithm 1 (cosine; 1.0 = dedupe only)
    """

    name: str
    dim: int
    query_channels: int = 16
    psc_threshold: float = 0.8

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise InvalidInputError(f"model name must be alphanumeric, got {self.name!r}")
        if self.dim <= 0 or self.query_channels <= 0:
            raise InvalidInputError(f"{self.name}: dim and query_channels must be positive")
        if not 0.0 < self.psc_threshold <= 1.0:
            raise InvalidInputError(f"{self.name}: psc_threshold must be in (0, 1]")


def pose_matrix(translation, quat_xyzw, *, what: str = "pose") -> torch.Tensor:
    """4x4 float64 transform from a translation [3] and a quaternion (x, y, z, w) [4].

    The quaternion must be finite and of unit norm within 1e-3 (ROS messages carry unit
    quaternions; a far-off norm means a bug upstream, so it is refused rather than normalised).
    """
    from scipy.spatial.transform import Rotation

    t = torch.as_tensor(translation, dtype=torch.float64).reshape(-1)
    q = torch.as_tensor(quat_xyzw, dtype=torch.float64).reshape(-1)
    if t.numel() != 3 or q.numel() != 4:
        raise InvalidInputError(f"{what}: need 3 translation and 4 quaternion values")
    if not (torch.isfinite(t).all() and torch.isfinite(q).all()):
        raise InvalidInputError(f"{what} contains NaN or infinite values")
    if abs(float(q.norm()) - 1.0) > 1e-3:
        raise InvalidInputError(f"{what}: quaternion norm is {float(q.norm()):.4f}, not 1")
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = torch.from_numpy(Rotation.from_quat(q.numpy()).as_matrix())
    m[:3, 3] = t
    return m


def matrix_to_pose(m: torch.Tensor) -> tuple[list[float], list[float]]:
    """Inverse of :func:`pose_matrix`: (translation [3], quaternion xyzw [4]) as lists."""
    from scipy.spatial.transform import Rotation

    m = m.detach().to(torch.float64).cpu()
    q = Rotation.from_matrix(m[:3, :3].numpy()).as_quat()
    return m[:3, 3].tolist(), [float(v) for v in q]
