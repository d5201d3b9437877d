import numpy as np
import torch

from m3_core.data.keyframes import KeyframePolicy, KeyframeSelector, rotation_angle_deg, sharpness
from m3_core.types import pose_matrix


def textured(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (60, 80, 3), dtype=np.uint8)


def blurred(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), 4)


def test_rotation_angle():
    a = pose_matrix([0, 0, 0], [0, 0, 0, 1])
    b = pose_matrix([0, 0, 0], [0, 0, np.sin(np.pi / 8), np.cos(np.pi / 8)])  # 45 deg about z
    assert abs(rotation_angle_deg(a, b) - 45.0) < 1e-9


def test_motion_threshold_and_blur_rejection():
    sel = KeyframeSelector(KeyframePolicy(min_translation=0.2, min_rotation_deg=15.0))
    pose = lambda x, yaw=0.0: pose_matrix([x, 0, 0], [0, 0, np.sin(yaw / 2), np.cos(yaw / 2)])  # noqa: E731
    assert sel.consider(pose(0.0), textured(0)) == (True, "keyframe")
    keep, why = sel.consider(pose(0.1), textured(1))
    assert not keep and "too close" in why
    assert sel.consider(pose(0.25), textured(2))[0]  # moved 0.25 m from the last keyframe
    assert sel.consider(pose(0.26, yaw=np.radians(20)), textured(3))[0]  # turned 20 deg
    for k in range(4, 8):
        sel.consider(pose(0.26 + k), textured(k))
    keep, why = sel.consider(pose(20.0), blurred(textured(9)))
    assert not keep and "blurred" in why
    assert sharpness(blurred(textured(9))) < 0.5 * sharpness(textured(9))
    # the rejected frame did not move the reference pose
    assert torch.equal(sel.last_pose[:3, 3], pose(7.26)[:3, 3])
