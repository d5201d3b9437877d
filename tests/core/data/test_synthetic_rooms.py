"""Random rooms: reproducible, inside the room, apart from each other and from the loop."""

from __future__ import annotations

import numpy as np
import pytest

from m3_core.data.synthetic import ROOM, loop_trajectory
from m3_core.data.synthetic_rooms import GAP, LOOP_CLEARANCE, random_objects
from m3_core.errors import InvalidInputError


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_random_rooms_are_valid_and_reproducible(seed):
    objs = random_objects(12, seed)
    assert objs == random_objects(12, seed) and objs != random_objects(12, seed + 1)
    assert len({o.label for o in objs}) == 12
    lo = np.array([np.array(o.center) - np.array(o.size) / 2 for o in objs])
    hi = np.array([np.array(o.center) + np.array(o.size) / 2 for o in objs])
    assert (lo >= np.array(ROOM.lo) - 1e-9).all() and (hi <= np.array(ROOM.hi) + 1e-9).all()
    assert np.allclose(lo[:, 2], 0.0)  # standing on the floor
    for i in range(12):
        for j in range(i + 1, 12):  # separated by at least GAP along x or y
            sep = np.maximum(lo[j, :2] - hi[i, :2], lo[i, :2] - hi[j, :2])
            assert sep.max() >= GAP - 1e-9
    cams = np.array([p[:2, 3].numpy() for p in loop_trajectory(200, seed=seed)])  # [200, 2]
    for a, b in zip(lo, hi):  # the camera never walks through or brushes a box
        d = np.maximum(np.maximum(a[:2] - cams, cams - b[:2]), 0.0)
        assert np.linalg.norm(d, axis=1).min() > LOOP_CLEARANCE - 0.1


def test_too_many_objects_is_refused():
    with pytest.raises(InvalidInputError):
        random_objects(0, 1)
    with pytest.raises(InvalidInputError):
        random_objects(31, 1)
