"""ChannelLayout: slices derived from the model specs."""

from __future__ import annotations

import pytest

from m3_core.config import MemoryConfig
from m3_core.errors import InvalidInputError, UnknownModelError
from m3_core.memory import ChannelLayout
from m3_core.types import ModelSpec

PAPER = [("clip", 768, 16), ("siglip", 1152, 32), ("dinov2", 1536, 32), ("seem", 512, 16)]


def test_paper_split_is_derived_from_specs():
    specs = [ModelSpec(n, d, s) for n, d, s in PAPER]
    layout = ChannelLayout.from_specs(specs)
    assert layout.names == ("clip", "siglip", "dinov2", "seem")
    assert layout.slice("clip") == slice(0, 16)
    assert layout.slice("siglip") == slice(16, 48)
    assert layout.slice("dinov2") == slice(48, 80)
    assert layout.slice("seem") == slice(80, 96)
    assert layout.total == 96 == MemoryConfig(models=specs).query_dim
    assert layout.channels("siglip") == 32


def test_slices_tile_the_query_in_spec_order():
    specs = [ModelSpec(f"m{i}", 8, c) for i, c in enumerate([3, 1, 7, 2, 5])]
    layout = ChannelLayout.from_specs(specs)
    covered = []
    for spec in specs:
        sl = layout.slice(spec.name)
        assert sl.stop - sl.start == spec.query_channels
        covered.extend(range(sl.start, sl.stop))
    assert covered == list(range(layout.total))
    assert len(layout) == 5 and "m2" in layout and "zz" not in layout


def test_to_dict():
    layout = ChannelLayout.from_specs([ModelSpec("a", 4, 2), ModelSpec("b", 4, 3)])
    assert layout.to_dict() == {
        "total": 5,
        "models": {
            "a": {"start": 0, "stop": 2, "channels": 2},
            "b": {"start": 2, "stop": 5, "channels": 3},
        },
    }


def test_unknown_name_lists_known_ones():
    layout = ChannelLayout.from_specs([ModelSpec("clip", 4, 2), ModelSpec("dino", 4, 3)])
    with pytest.raises(UnknownModelError, match="'siglip'.*clip, dino"):
        layout.slice("siglip")
    with pytest.raises(UnknownModelError):
        layout.channels("siglip")


def test_empty_and_bad_specs():
    empty = ChannelLayout.from_specs([])
    assert empty.total == 0 and empty.names == ()
    with pytest.raises(UnknownModelError, match="none"):
        empty.slice("clip")
    with pytest.raises(InvalidInputError, match="duplicate"):
        ChannelLayout.from_specs([ModelSpec("a", 4, 2), ModelSpec("a", 8, 2)])
    with pytest.raises(InvalidInputError, match="ModelSpec"):
        ChannelLayout.from_specs([("a", 4, 2)])
