"""Random furnished rooms for :func:`m3_core.data.synthetic.make_synthetic_scene`.

:func:`random_objects` places ``n`` labelled boxes of random size, colour and pattern in the
6 x 5 m room so that none overlaps another (a clear gap between any two), none blocks the
camera's walking loop, and each label appears once; the seed fixes everything. The labels
come from :data:`HOUSEHOLD`; the ones a room does not use make natural absent queries.
:func:`write_room` renders such a room into a dataset with label features of one of
:data:`ROOM_FEATURES` (``m3 synth``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from m3_core.data.dataset import SceneDataset
from m3_core.data.raycast import PATTERNS
from m3_core.data.synthetic import ROOM, SyntheticObject, make_synthetic_scene
from m3_core.errors import InvalidInputError

HOUSEHOLD: tuple[str, ...] = (
    "chair", "sofa", "plant", "table", "box", "lamp", "bed", "tv", "desk", "cabinet",
    "bookshelf", "fridge", "washing machine", "oven", "bin", "suitcase", "backpack", "stool",
    "armchair", "dresser", "printer", "speaker", "guitar", "piano", "bicycle", "crate",
    "heater", "fan", "aquarium", "toolbox",
)  # fmt: skip
LOOP_AXES = (1.6, 1.2)  # the camera loop of synthetic.loop_trajectory (ellipse half-axes, m)
LOOP_CLEARANCE = 0.45  # no box within this distance of the loop (the camera walks there)
GAP = 0.3  # minimum clearance between two boxes (ground plane), metres
WALL_MARGIN = 0.05


def _clear_of_loop(lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether the footprint [lo, hi] (x, y) keeps LOOP_CLEARANCE from the loop ellipse."""
    xs, ys = np.linspace(lo[0], hi[0], 7), np.linspace(lo[1], hi[1], 7)
    gx, gy = np.meshgrid(xs, ys)
    a, b = LOOP_AXES
    outer = (gx / (a + LOOP_CLEARANCE)) ** 2 + (gy / (b + LOOP_CLEARANCE)) ** 2 > 1.0
    inner = (gx / (a - LOOP_CLEARANCE)) ** 2 + (gy / (b - LOOP_CLEARANCE)) ** 2 < 1.0
    return bool(outer.all() or inner.all())


def random_objects(
    n: int,
    seed: int,
    *,
    labels: tuple[str, ...] = HOUSEHOLD,
    max_tries: int = 20_000,
) -> list[SyntheticObject]:
    """``n`` random non-overlapping labelled boxes (module doc); InvalidInputError when they
    do not fit."""
    if not 1 <= n <= len(labels):
        raise InvalidInputError(f"number of objects must be in 1..{len(labels)}, got {n}")
    rng = np.random.default_rng(seed)
    names = [labels[i] for i in rng.permutation(len(labels))[:n]]
    room_lo = np.array(ROOM.lo[:2]) + WALL_MARGIN
    room_hi = np.array(ROOM.hi[:2]) - WALL_MARGIN
    placed: list[tuple[np.ndarray, np.ndarray]] = []
    objects = []
    for name in names:
        for _ in range(max_tries):
            size = np.r_[rng.uniform(0.3, 1.2, 2), rng.uniform(0.3, 1.4)]
            xy = rng.uniform(room_lo + size[:2] / 2, room_hi - size[:2] / 2)
            lo, hi = xy - size[:2] / 2, xy + size[:2] / 2
            if not _clear_of_loop(lo, hi):
                continue
            if any((lo < b_hi + GAP).all() and (b_lo - GAP < hi).all() for b_lo, b_hi in placed):
                continue
            placed.append((lo, hi))
            colour = tuple(float(c) for c in rng.uniform(0.05, 0.95, 3))
            pattern = str(PATTERNS[rng.integers(len(PATTERNS))])
            centre = (float(xy[0]), float(xy[1]), float(size[2] / 2))
            dims = (float(size[0]), float(size[1]), float(size[2]))
            objects.append(SyntheticObject(name, centre, dims, colour, pattern))
            break
        else:
            raise InvalidInputError(f"could not place {n} objects (seed {seed}); try fewer")
    return objects


ROOM_FEATURES: dict[str, dict[str, float | int]] = {  # make_synthetic_scene feature arguments
    # per-pixel label features: stride 1, no noise
    "exact": {"feature_stride": 1, "feature_noise": 0.0, "cell_noise": 0.0},
    # a patch grid 1/8 of the image, borders blended by average pooling, N(0, 0.15^2) per
    # cell and channel (cosine to the clean label ~0.85), like a ViT's patch features
    "coarse": {"feature_stride": 8, "cell_noise": 0.15},
}


def write_room(
    out: str | Path,
    *,
    frames: int = 60,
    width: int = 160,
    height: int = 120,
    objects: int = 8,
    seed: int = 0,
    features: str = "coarse",
    on_frame: Callable[[int, int], None] | None = None,
) -> SceneDataset:
    """A random room of ``objects`` boxes (:func:`random_objects` with ``seed``) rendered by
    :func:`make_synthetic_scene` into ``out`` with the label features of ``features`` (a key
    of :data:`ROOM_FEATURES`); returns the dataset, opened. The seed fixes every byte."""
    if features not in ROOM_FEATURES:
        raise InvalidInputError(
            f"features must be one of {sorted(ROOM_FEATURES)}, got {features!r}"
        )
    if frames < 1:
        raise InvalidInputError(f"frames must be >= 1, got {frames}")
    return make_synthetic_scene(
        out, num_frames=frames, width=width, height=height, objects=random_objects(objects, seed),
        seed=seed, on_frame=on_frame, **ROOM_FEATURES[features],
    )  # fmt: skip
