"""Stand-off navigation goals: where a ground robot should stand to look at an object.

A goal is (x, y, yaw) in the memory's world frame (REP-103: x forward, y left, z up; yaw about
+z). It lies ``distance`` from the object's box edge on the ground plane, facing the box
centre, on the side closest to the robot, and is rejected if memory Gaussians (obstacles)
occupy a disc of ``robot_radius`` around it, trying other approach angles in turn.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from m3_core.errors import InvalidInputError


@dataclass(frozen=True)
class Goal:
    x: float
    y: float
    yaw: float  # radians, facing the target

    @property
    def quat_xyzw(self) -> tuple[float, float, float, float]:
        return (0.0, 0.0, math.sin(self.yaw / 2), math.cos(self.yaw / 2))


def standoff_goal(
    bbox_min,  # [3] object box in the world frame
    bbox_max,  # [3]
    *,
    distance: float = 0.8,  # clearance between the box edge and the goal (metres)
    robot_xy=None,  # [2] current robot position; None = approach along -x
    obstacles_xy: np.ndarray | None = None,  # [M, 2] occupied ground positions
    robot_radius: float = 0.3,
    num_candidates: int = 16,
) -> Goal:
    lo, hi = np.asarray(bbox_min, float), np.asarray(bbox_max, float)
    if lo.shape != (3,) or hi.shape != (3,) or not np.isfinite([*lo, *hi]).all():
        raise InvalidInputError("object box must be two finite 3-vectors")
    if distance < 0 or robot_radius < 0:
        raise InvalidInputError("distance and robot_radius must be >= 0")
    center = (lo[:2] + hi[:2]) / 2
    half = np.linalg.norm(hi[:2] - lo[:2]) / 2  # box circumradius on the ground plane
    radius = half + distance
    if robot_xy is not None and np.linalg.norm(np.asarray(robot_xy, float) - center) > 1e-6:
        d = np.asarray(robot_xy, float) - center
        base = math.atan2(d[1], d[0])
    else:
        base = math.pi  # approach from -x
    # candidate angles: the robot's side first, then alternating further around
    steps = [0] + [s * k for k in range(1, num_candidates // 2 + 1) for s in (1, -1)]
    for k in steps[:num_candidates]:
        ang = base + k * 2 * math.pi / num_candidates
        xy = center + radius * np.array([math.cos(ang), math.sin(ang)])
        if obstacles_xy is not None and len(obstacles_xy):
            if np.min(np.linalg.norm(obstacles_xy - xy, axis=1)) < robot_radius:
                continue
        yaw = math.atan2(center[1] - xy[1], center[0] - xy[0])
        return Goal(float(xy[0]), float(xy[1]), yaw)
    raise InvalidInputError(
        f"no free stand-off position within {radius:.2f} m of the object "
        f"({num_candidates} directions tried)"
    )


COMMAND = re.compile(
    r"^\s*(?:please\s+)?(?:(?:go|navigate|drive|move|walk|head)\s+(?:over\s+)?(?:to|towards?)"
    r"|find|approach)\b\s*(?:(?:the|a|an|my)\b\s*)?",
    re.IGNORECASE,
)


def command_target(command: str) -> str:
    """The object named by a spoken-style command: "Go to the espresso machine." ->
    "espresso machine"; text without a command verb is returned as is (trimmed)."""
    text = COMMAND.sub("", command.strip(), count=1).strip().rstrip(".!?").strip()
    if not text:
        raise InvalidInputError(f"no object named in the command {command!r}")
    return text
