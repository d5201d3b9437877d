"""Dataclass configs and their (strict) JSON round trip.

Configs live next to the code they configure (``TrainConfig`` in ``m3_core.train``, ...);
this module holds the memory-level config and the generic helpers that save the resolved
config with every run and load it back, refusing unknown keys.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from m3_core.errors import InvalidInputError
from m3_core.types import ModelSpec

T = TypeVar("T")


@dataclass
class MemoryConfig:
    """What a memory is made of; saved beside its tensors (``memory.json``)."""

    models: list[ModelSpec] = field(default_factory=list)
    sh_degree: int = 3
    gma_temperature: float = 0.05  # tau of Gaussian Memory Attention
    train_projection: bool = False  # released M3 keeps W_m frozen at N(0, 1)

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"duplicate model names in {names}")
        if self.gma_temperature <= 0:
            raise InvalidInputError("gma_temperature must be positive")

    @property
    def query_dim(self) -> int:
        return sum(m.query_channels for m in self.models)


def to_dict(obj: Any) -> Any:
    """Dataclasses (nested, in lists/dicts) -> plain JSON-able values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_convert(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _convert(args[0], value, where)
    if tp is Path and isinstance(value, str):
        return Path(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type[T], data: Any, *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error, not silently dropped."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidInputError(f"{where}: unknown keys {unknown} for {cls.__name__}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def save_json(obj: Any, path: str | Path) -> None:
    """Write ``to_dict(obj)`` as JSON atomically (temp file + rename)."""
    from m3_core.io import atomic_write_text

    atomic_write_text(path, json.dumps(to_dict(obj), indent=2, sort_keys=True) + "\n")
