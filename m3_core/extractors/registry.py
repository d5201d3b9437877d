"""The extractor registry (in the spirit of open_clip's ``factory``): name -> builder.

A builder is a callable ``builder(*, weights, device, **kw) -> FeatureExtractor``, or a lazy
reference ``"package.module:function"`` imported only when the model is created, so importing
``m3_core.extractors`` never imports open_clip, transformers or torchvision.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from typing import Any

import torch

from m3_core.errors import InvalidInputError, UnknownModelError
from m3_core.extractors.base import FeatureExtractor, resolve_device

Builder = Callable[..., FeatureExtractor]

_REGISTRY: dict[str, Builder | str] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, builder: Builder | str, *, description: str = "") -> None:
    """Register (or replace) the builder of extractor ``name``."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise InvalidInputError(f"extractor name must be alphanumeric, got {name!r}")
    if not (callable(builder) or (isinstance(builder, str) and ":" in builder)):
        raise InvalidInputError("builder must be a callable or a 'module:function' string")
    _REGISTRY[name] = builder
    _DESCRIPTIONS[name] = description


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    _DESCRIPTIONS.pop(name, None)


def list_extractors() -> list[str]:
    """Registered extractor names, sorted."""
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    return _DESCRIPTIONS.get(name, "")


def _builder(name: str) -> Builder:
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"unknown extractor {name!r}; registered: {', '.join(list_extractors())}"
        )
    b = _REGISTRY[name]
    if isinstance(b, str):
        module, func = b.split(":", 1)
        b = getattr(importlib.import_module(module), func)
        _REGISTRY[name] = b
    return b


def create_extractor(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    **kw: Any,
) -> FeatureExtractor:
    """Build extractor ``name`` with weights from a local path (see ``weights.py``).

    ``device``: "cpu", "cuda", "cuda:1" or "auto". Extra keywords go to the family's builder
    (e.g. ``short_side``, ``stride``, ``arch``).
    """
    builder = _builder(name)
    try:
        inspect.signature(builder).bind(weights=weights, device=device, **kw)
    except TypeError:
        accepted = [
            p for p in inspect.signature(builder).parameters if p not in ("weights", "device")
        ]
        raise InvalidInputError(
            f"extractor {name!r}: unknown option(s) {sorted(kw)}; accepted: {accepted}"
        ) from None
    return builder(weights=weights, device=resolve_device(device), **kw)


_BUILTIN = (
    ("clip", "clip:build_clip", "CLIP (open_clip or transformers), MaskCLIP dense features"),
    ("siglip", "siglip:build_siglip", "SigLIP (transformers), pooling head applied per patch"),
    ("dinov2", "dinov2:build_dinov2", "DINOv2 (transformers) patch tokens; no text tower"),
    ("effnet", "efficientnet:build_effnet", "EfficientNet-Lite0 ImageNet; 1000 class names"),
    ("precomputed", "precomputed:build_precomputed", "read DATA/features/<name>/"),
)
for _name, _ref, _desc in _BUILTIN:
    register(_name, f"m3_core.extractors.{_ref}", description=_desc)
