"""The train/test split: every 8th frame (sorted by name) is a test view, as in the paper.

A dataset may instead list its test views (nerfstudio ``test_filenames``); they are matched by
file path (as written in the dataset) or by image stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from m3_core.errors import InvalidInputError

TEST_EVERY = 8


def _stem(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).stem


def split_indices(
    names: Sequence[str],
    test_filenames: Sequence[str] | None = None,
    *,
    every: int = TEST_EVERY,
) -> tuple[list[int], list[int]]:
    """(train indices, test indices) of frames with these names (sorted by name).

    Without ``test_filenames`` the test views are indices 0, every, 2 * every, ... ; a
    dataset of a single frame has no test view (it would leave nothing to train on).
    ``test_filenames`` entries may be paths ("images/frame_0008.png") or stems; each must name a
    frame of the dataset.
    """
    names = list(names)
    if names != sorted(names):
        raise InvalidInputError("split_indices needs names sorted")
    if every < 1:
        raise InvalidInputError(f"test split period must be >= 1, got {every}")
    if test_filenames is None:
        test = list(range(0, len(names), every)) if len(names) > 1 else []
    else:
        by_stem = {_stem(n): i for i, n in enumerate(names)}
        test_set: set[int] = set()
        for t in test_filenames:
            i = by_stem.get(_stem(str(t)))
            if i is None:
                raise InvalidInputError(f"test file {t!r} is not a frame of the dataset")
            test_set.add(i)
        test = sorted(test_set)
    test_set = set(test)
    train = [i for i in range(len(names)) if i not in test_set]
    return train, test
