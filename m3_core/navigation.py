"""Stand-off navigation goals: where a ground robot should stand to look at an object.

A goal is (x, y, yaw) in the memory's world frame (REP-103: x forward, y left, z up; yaw about
+z). It lies ``distance`` from the object's box edge on the ground plane, facing the box
centre, on the side closest to the robot, and is rejected if memory Gaussians (obstacles)
occupy a disc of ``robot_radius`` around it, trying other approach angles in turn.

The obstacles come from :func:`occupancy_grid`: the memory's opaque Gaussians between a
minimum and maximum height above the floor, binned into ground cells (computed once per
memory; the memory server publishes it as a ``nav_msgs/OccupancyGrid``).
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
    sight_clearance: float = 0.05,  # an obstacle this close to the line of sight blocks it
    free_xy: np.ndarray | None = None,  # [K, 2] ground seen free (floor): goals stay near it
) -> Goal:
    """The stand-off goal (module doc). With ``obstacles_xy`` a candidate is refused when an
    obstacle lies within ``robot_radius`` of it, or on the straight line from it to the box
    (a wall between the goal and the object: the far side of a wall is not an approach).
    With ``free_xy`` it must also lie within ``robot_radius`` of floor the memory has seen
    (not outside the room or in unobserved space)."""
    lo, hi = np.asarray(bbox_min, float), np.asarray(bbox_max, float)
    if lo.shape != (3,) or hi.shape != (3,) or not np.isfinite([*lo, *hi]).all():
        raise InvalidInputError("object box must be two finite 3-vectors")
    if distance < 0 or robot_radius < 0:
        raise InvalidInputError("distance and robot_radius must be >= 0")
    tree = None  # nearest-obstacle queries
    if obstacles_xy is not None and len(obstacles_xy):
        from scipy.spatial import cKDTree

        tree = cKDTree(np.asarray(obstacles_xy, float).reshape(-1, 2))
    floor = None
    if free_xy is not None:
        from scipy.spatial import cKDTree

        if not len(free_xy):
            raise InvalidInputError("no free ground is known: no stand-off position")
        floor = cKDTree(np.asarray(free_xy, float).reshape(-1, 2))
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
        if tree is not None and (
            tree.query(xy)[0] < robot_radius
            or _view_blocked(xy, lo[:2], hi[:2], tree, sight_clearance)
        ):
            continue
        if floor is not None and floor.query(xy)[0] > robot_radius:
            continue
        yaw = math.atan2(center[1] - xy[1], center[0] - xy[0])
        return Goal(float(xy[0]), float(xy[1]), yaw)
    raise InvalidInputError(
        f"no free stand-off position within {radius:.2f} m of the object "
        f"({num_candidates} directions tried)"
    )


def _view_blocked(xy, lo, hi, tree, clearance: float) -> bool:
    """Whether an obstacle lies on the segment from ``xy`` to the box centre, outside the box
    (grown by ``clearance``: the object's own cells do not block the view of it)."""
    center = (lo + hi) / 2
    n = max(int(np.ceil(np.linalg.norm(center - xy) / max(clearance, 1e-3))), 1)
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    samples = xy + t * (center - xy)  # [n + 1, 2]
    inside = np.all((samples >= lo - clearance) & (samples <= hi + clearance), axis=1)
    samples = samples[~inside]
    if not len(samples):
        return False
    return bool(tree.query(samples)[0].min() < clearance)


def floor_height(z: np.ndarray, bin_size: float = 0.05) -> float:  # z [N]
    """The floor: the densest horizontal layer (``bin_size`` thick) among the lower half of
    the heights (walls spread over all heights; floaters under the floor are few), as the
    median height of that layer's points."""
    low = z[z <= np.median(z)]
    bins = np.floor((low - low.min()) / bin_size).astype(np.int64)
    layer = int(np.argmax(np.bincount(bins)))
    return float(np.median(low[bins == layer]))


@dataclass(frozen=True)
class GroundGrid:
    """A 2D occupancy grid on the ground plane (nav_msgs/OccupancyGrid conventions)."""

    origin: tuple[float, float]  # world x, y of the corner of cell [0, 0]
    resolution: float  # cell edge, metres
    cells: np.ndarray  # [H, W] int8: 100 occupied, 0 free (floor seen), -1 unknown; [row=y, col=x]
    floor_z: float  # the floor height used

    def occupied_xy(self) -> np.ndarray:  # [M, 2] centres of the occupied cells
        return self.centres(OCCUPIED)

    def free_xy(self) -> np.ndarray:  # [K, 2] centres of the cells seen free (floor)
        return self.centres(FREE)

    def centres(self, value: int) -> np.ndarray:  # [M, 2]
        rows, cols = np.nonzero(self.cells == value)
        x = self.origin[0] + (cols + 0.5) * self.resolution
        y = self.origin[1] + (rows + 0.5) * self.resolution
        return np.stack([x, y], axis=1).astype(np.float64)


OCCUPIED, FREE, UNKNOWN = 100, 0, -1


def occupancy_grid(
    means,  # [N, 3] Gaussian centres in the world frame (z up)
    opacities,  # [N] activated opacities in [0, 1]
    *,
    resolution: float = 0.05,
    min_height: float = 0.1,  # above the floor: lower points are the floor itself
    max_height: float = 1.5,  # above the floor: higher points do not block the robot
    min_opacity: float = 0.5,
    floor_z: float | None = None,  # None: estimated (floor_height)
    min_points: int = 1,  # opaque centres a cell needs to be occupied (floaters are single)
    max_cells: int = 4_000_000,
) -> GroundGrid:
    """The occupied ground of a memory: a cell is occupied when at least ``min_points`` opaque
    Gaussian centres lie in it at heights in [floor + min_height, floor + max_height]; free
    when that many floor points (below floor + min_height) do; unknown otherwise. The grid
    spans the opaque centres up to max_height, aligned to multiples of ``resolution``."""
    pts, alpha = np.asarray(means, np.float64), np.asarray(opacities, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or alpha.shape != (pts.shape[0],):
        raise InvalidInputError("occupancy_grid needs means [N, 3] and opacities [N]")
    if not resolution > 0 or not 0 <= min_height < max_height:
        raise InvalidInputError("need resolution > 0 and 0 <= min_height < max_height")
    keep = (alpha >= min_opacity) & np.isfinite(pts).all(axis=1)
    pts = pts[keep]
    if not len(pts):
        raise InvalidInputError("the memory has no opaque Gaussians to build a grid from")
    floor = floor_height(pts[:, 2], resolution) if floor_z is None else float(floor_z)
    h = pts[:, 2] - floor
    pts, h = pts[h <= max_height], h[h <= max_height]
    lo = np.floor(pts[:, :2].min(axis=0) / resolution) * resolution  # [2]
    ij = np.floor((pts[:, :2] - lo) / resolution + 1e-9).astype(np.int64)  # [M, 2] (x, y)
    width, height = (ij.max(axis=0) + 1).tolist()
    if width * height > max_cells:
        raise InvalidInputError(
            f"occupancy grid of {width}x{height} cells exceeds {max_cells}: raise resolution"
        )
    cells = np.full((height, width), UNKNOWN, np.int8)
    need = max(int(min_points), 1)
    for value, mask in ((FREE, h < min_height), (OCCUPIED, h >= min_height)):
        counts = np.zeros((height, width), np.int64)
        np.add.at(counts, (ij[mask, 1], ij[mask, 0]), 1)
        cells[counts >= need] = value  # occupied last: it wins over floor
    return GroundGrid((float(lo[0]), float(lo[1])), float(resolution), cells, floor)


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
