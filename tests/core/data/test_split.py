"""The train/test split: every 8th frame by name, or the dataset's own test list."""

from __future__ import annotations

import pytest

from m3_core.data import split_indices
from m3_core.errors import InvalidInputError


def _names(n: int) -> list[str]:
    return [f"frame_{i:04d}" for i in range(n)]


@pytest.mark.parametrize(
    ("n", "test"),
    [(1, []), (2, [0]), (8, [0]), (9, [0, 8]), (17, [0, 8, 16]), (24, [0, 8, 16])],
)
def test_every_eighth_frame_is_a_test_view(n: int, test: list[int]) -> None:
    train, got = split_indices(_names(n))
    assert got == test
    assert sorted(train + got) == list(range(n)) and not set(train) & set(got)


def test_explicit_test_filenames_by_path_or_stem() -> None:
    train, test = split_indices(_names(5), ["images/frame_0003.png", "frame_0001"])
    assert test == [1, 3] and train == [0, 2, 4]
    assert split_indices(_names(3), []) == ([0, 1, 2], [])


def test_bad_split_input() -> None:
    with pytest.raises(InvalidInputError, match="not a frame"):
        split_indices(_names(3), ["images/other.png"])
    with pytest.raises(InvalidInputError, match="sorted"):
        split_indices(["b", "a"])
    with pytest.raises(InvalidInputError, match=">= 1"):
        split_indices(_names(3), every=0)
    assert split_indices(_names(6), every=3)[1] == [0, 3]
