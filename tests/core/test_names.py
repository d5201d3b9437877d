"""One naming rule for every name that becomes a file or folder: frames, feature folders,
recording ids, memories and archives (m3_ros.trust.check_id is the same rule)."""

from __future__ import annotations

import pytest

from m3_core.data.features import FeatureStore
from m3_core.errors import InvalidInputError
from m3_core.names import check_name

GOOD = ["a", "rec_0001", "frame_000012", "effnet", "walk.live", "A-b_c.1", "_x", "x" * 128]
BAD = ["", ".", "..", ".hidden", "-rf", "a/b", "../x", "a b", "x" * 129, "abc\n", "é", None, 5]


@pytest.mark.parametrize("name", GOOD)
def test_safe_names_pass_unchanged(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_unsafe_names_are_refused_with_what_they_name(name):
    with pytest.raises(InvalidInputError, match="bad recording id"):
        check_name(name, "recording id")


def test_every_user_of_the_rule_refuses_the_same_names(tmp_path):
    pytest.importorskip("rclpy")
    from m3_ros.trust import check_id

    for name in BAD:
        with pytest.raises(InvalidInputError):
            check_id(name)
        if isinstance(name, str):
            with pytest.raises(InvalidInputError, match="bad feature name"):
                FeatureStore(tmp_path, name)
    for name in GOOD:
        assert check_id(name) == name
        assert FeatureStore(tmp_path, name).name == name
