"""Channel layout of the principal query: which slice of q [Q] belongs to which model.

The split is derived from the ordered list of enabled :class:`~m3_core.types.ModelSpec`
(never from literals): model i owns channels ``[sum(s_0..s_{i-1}), sum(s_0..s_i))`` where
``s_m = spec.query_channels``. The total Q equals ``MemoryConfig.query_dim``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from m3_core.errors import InvalidInputError, UnknownModelError
from m3_core.types import ModelSpec


@dataclass(frozen=True)
class ChannelLayout:
    """Contiguous, non-overlapping per-model slices of the query vector, in spec order."""

    _entries: tuple[tuple[str, int, int], ...] = ()  # (name, start, stop)

    @classmethod
    def from_specs(cls, specs: Sequence[ModelSpec]) -> ChannelLayout:
        entries: list[tuple[str, int, int]] = []
        seen: set[str] = set()
        start = 0
        for spec in specs:
            if not isinstance(spec, ModelSpec):
                raise InvalidInputError(f"expected ModelSpec, got {type(spec).__name__}")
            if spec.name in seen:
                raise InvalidInputError(f"duplicate model name {spec.name!r} in the layout")
            seen.add(spec.name)
            entries.append((spec.name, start, start + spec.query_channels))
            start += spec.query_channels
        return cls(tuple(entries))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e[0] for e in self._entries)

    @property
    def total(self) -> int:
        """Q, the full query dimension (0 for a layout without models)."""
        return self._entries[-1][2] if self._entries else 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return any(e[0] == name for e in self._entries)

    def _entry(self, name: str) -> tuple[str, int, int]:
        for e in self._entries:
            if e[0] == name:
                return e
        known = ", ".join(self.names) or "none"
        raise UnknownModelError(f"unknown model {name!r}; this memory has: {known}")

    def slice(self, name: str) -> slice:
        """Channels of ``name`` in the full query vector (raises UnknownModelError)."""
        _, start, stop = self._entry(name)
        return slice(start, stop)

    def channels(self, name: str) -> int:
        """s_m, the number of query channels of ``name``."""
        _, start, stop = self._entry(name)
        return stop - start

    def to_dict(self) -> dict[str, Any]:
        """``{"total": Q, "models": {name: {"start", "stop", "channels"}}}`` (JSON-able)."""
        return {
            "total": self.total,
            "models": {n: {"start": a, "stop": b, "channels": b - a} for n, a, b in self._entries},
        }
