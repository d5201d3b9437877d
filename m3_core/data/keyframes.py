"""Keyframe selection for a walking robot: enough motion since the last keyframe, not blurred.

A frame is kept when the camera moved at least ``min_translation`` metres or turned at least
``min_rotation_deg`` degrees since the last kept frame, and its sharpness (variance of the
Laplacian of the grey image) is at least ``blur_ratio`` times the median sharpness of recent
frames (relative, so it adapts to the scene's texture) and at least ``min_sharpness``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (uint8 [H, W, 3]); low = blurred."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def rotation_angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle of the relative rotation between two [4, 4] poses, in degrees."""
    r = a[:3, :3].to(torch.float64).T @ b[:3, :3].to(torch.float64)
    c = (torch.trace(r).item() - 1.0) / 2.0
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


@dataclass
class KeyframePolicy:
    min_translation: float = 0.15  # metres
    min_rotation_deg: float = 10.0
    blur_ratio: float = 0.5  # reject below this fraction of the recent median sharpness
    min_sharpness: float = 5.0  # absolute floor (variance of the Laplacian)
    history: int = 30  # frames in the running sharpness median


class KeyframeSelector:
    """Stateful: call :meth:`consider` for every synchronised frame, in time order."""

    def __init__(self, policy: KeyframePolicy | None = None) -> None:
        self.policy = policy or KeyframePolicy()
        self.last_pose: torch.Tensor | None = None
        self.recent: deque[float] = deque(maxlen=self.policy.history)

    def consider(self, c2w: torch.Tensor, rgb: np.ndarray) -> tuple[bool, str]:
        """(keep?, reason). Keeping updates the reference pose."""
        s = sharpness(rgb)
        self.recent.append(s)
        p = self.policy
        if s < p.min_sharpness:
            return False, f"blurred (sharpness {s:.1f} < {p.min_sharpness})"
        if len(self.recent) >= 5 and s < p.blur_ratio * float(np.median(self.recent)):
            return (
                False,
                f"blurred (sharpness {s:.1f} vs recent median {np.median(self.recent):.1f})",
            )
        if self.last_pose is not None:
            moved = (c2w[:3, 3] - self.last_pose[:3, 3]).norm().item()
            turned = rotation_angle_deg(self.last_pose, c2w)
            if moved < p.min_translation and turned < p.min_rotation_deg:
                return False, f"too close to the last keyframe ({moved:.2f} m, {turned:.1f} deg)"
        self.last_pose = c2w.clone()
        return True, "keyframe"
