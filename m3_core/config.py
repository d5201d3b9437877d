"""Dataclass configs and their (strict) JSON round trip.

Configs live next to the code they configure (``TrainConfig`` in ``m3_core.train``, ...);
this module holds the memory-level config and the generic helpers that save the resolved
config with every run and load it back, refusing unknown keys and values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
        if not (math.isfinite(self.gma_temperature) and self.gma_temperature > 0):
            raise InvalidInputError(
                f"gma_temperature must be positive, got {self.gma_temperature}"
            )
        if not 0 <= self.sh_degree <= 4:  # gsplat's spherical harmonics go up to degree 4
            raise InvalidInputError(f"sh_degree must be 0..4, got {self.sh_degree}")

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


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _wrong(where: str, tp: Any, value: Any) -> InvalidInputError:
    return InvalidInputError(
        f"{where} must be {_type_name(tp)}, got {type(value).__name__} {value!r:.60}"
    )


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as type ``tp``: the types are checked, never coerced from
    strings (a bool is not an int; an int is a float; a list is a tuple or a Path a str)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _wrong(where, tp, value)
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where)
            except InvalidInputError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else _wrong(where, tp, value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _wrong(where, tp, value)
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InvalidInputError(f"{where} must have {len(args)} items, got {len(value)}")
            return tuple(
                _convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))
            )
        arg = args[0] if args else Any
        items = [_convert(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(where, tp, value)
        k_tp, v_tp = typing.get_args(tp) or (Any, Any)
        return {
            _convert(k_tp, k, f"{where} key"): _convert(v_tp, v, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong(where, tp, value)
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _wrong(where, tp, value)
        return value
    if tp is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise _wrong(where, "a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _wrong(where, tp, value)
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise _wrong(where, "a path string", value)
        return Path(value)
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
