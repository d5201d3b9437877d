"""The ``FeatureExtractor`` interface and the preprocessing that travels with a model's weights.

Conventions (every extractor):
    * ``encode_image(images)`` takes RGB images [B, 3, H, W], float in [0, 1] (any size, one
      size per batch), applies the extractor's own :class:`Preprocess` (resize keeping the
      aspect ratio to a multiple of the model's patch/stride, then mean/std normalisation; NO
      centre crop) and returns raw, unnormalised dense features [B, D, h, w] float32. Cell
      (i, j) of the grid covers the image region [j/w, (j+1)/w] x [i/h, (i+1)/h] (normalised),
      row 0 at the top, exactly as the precomputed format of ``m3_core.data.features``.
    * ``encode_text(texts)`` returns unit-norm text embeddings [K, D] float32 in the same space
      as the image features (cosine is the similarity), cached per text. Models without a text
      tower raise :class:`M3Error`; empty text raises :class:`InvalidInputError`.
    * Both run under ``torch.no_grad()`` on ``self.device`` and return tensors there.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from m3_core.errors import InvalidInputError, M3Error

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)  # SigLIP: [0, 1] -> [-1, 1]
HALF_STD = (0.5, 0.5, 0.5)
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Preprocess:
    """Resize (aspect kept) + normalise, so that the feature grid covers the whole frame.

    The short side is scaled to ``short_side`` (the long side capped at ``max_side``), then
    each side is rounded to the nearest multiple of ``multiple`` (at least one). The rounding
    stretches the image by at most half a patch per side, so grid cell (i, j) still covers
    the same normalised region of the original frame. ``stride``: input pixels per output
    feature cell (patch size for ViTs); ``multiple`` is a multiple of it.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    short_side: int
    multiple: int
    stride: int
    max_side: int = 1344

    def __post_init__(self) -> None:
        if self.short_side < 1 or self.multiple < 1 or self.stride < 1:
            raise InvalidInputError("preprocess sizes must be positive")
        if self.multiple % self.stride:
            raise InvalidInputError(f"multiple {self.multiple} must be a multiple of stride")
        if min(self.std) <= 0:
            raise InvalidInputError(f"normalisation std must be positive, got {self.std}")

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size (H', W') for a frame of ``height`` x ``width`` pixels."""
        scale = self.short_side / min(height, width)
        scale = min(scale, self.max_side / max(height, width))
        m = self.multiple
        h = max(m, int(math.floor(height * scale / m + 0.5)) * m)
        w = max(m, int(math.floor(width * scale / m + 0.5)) * m)
        return h, w

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Feature grid (h, w) produced for a frame of ``height`` x ``width`` pixels."""
        h, w = self.target_size(height, width)
        return h // self.stride, w // self.stride

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> normalised [B, 3, H', W'] (see target_size)."""
        validate_images(images)
        h, w = self.target_size(images.shape[2], images.shape[3])
        x = images.float()
        if (h, w) != tuple(x.shape[2:]):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "short_side": self.short_side,
            "multiple": self.multiple,
            "stride": self.stride,
            "max_side": self.max_side,
        }


def validate_images(images: torch.Tensor) -> None:
    """Raise InvalidInputError unless ``images`` is a finite float [B, 3, H, W] in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise InvalidInputError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or min(images.shape) < 1:
        raise InvalidInputError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InvalidInputError(f"images must be float in [0, 1], got {images.dtype}")
    if not torch.isfinite(images).all():
        raise InvalidInputError("images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InvalidInputError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")


def validate_texts(texts: list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InvalidInputError("texts must be a list of strings")
    if not texts:
        raise InvalidInputError("texts must not be empty")
    out = []
    for t in texts:
        if not isinstance(t, str) or not t.strip():
            raise InvalidInputError(f"text queries must be non-empty strings, got {t!r}")
        out.append(t.strip())
    return out


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available else cpu; other strings are passed to torch.device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidInputError(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device 'cuda' requested but no CUDA device is available")
    return dev


class FeatureExtractor(ABC):
    """A frozen foundation model giving dense features (and text embeddings if it can).

    Subclasses set ``name``, ``dim``, ``stride``, ``has_text``, ``preprocess`` and ``device``
    and implement :meth:`_encode` (preprocessed [B, 3, H', W'] -> [B, D, h, w]) and, with a
    text tower, :meth:`_encode_text` (texts -> [K, D], any norm).
    """

    name: str
    dim: int
    stride: int
    has_text: bool = False
    preprocess: Preprocess
    device: torch.device
    text_cache_size: int = 4096

    def __init__(self) -> None:
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # text -> [D]

    # ---- images ---------------------------------------------------------------------------
    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return self.preprocess.grid_size(height, width)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] float in [0, 1] -> raw dense features [B, D, h, w] float32."""
        x = self.preprocess(images.to(self.device))
        with torch.no_grad():
            feats = self._encode(x).float()
        exp = (x.shape[0], self.dim, x.shape[2] // self.stride, x.shape[3] // self.stride)
        if tuple(feats.shape) != exp:  # an extractor bug, not user input
            raise RuntimeError(f"{self.name}: features {tuple(feats.shape)} != expected {exp}")
        return feats

    @abstractmethod
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input [B, 3, H', W'] -> [B, D, H'/stride, W'/stride]."""

    # ---- text -----------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """texts [K] -> unit-norm embeddings [K, D] float32 on ``self.device`` (cached)."""
        texts = validate_texts(texts)
        if not self.has_text:
            raise M3Error(
                f"model '{self.name}' has no text encoder: query with a model that has one "
                "(clip, siglip, effnet) or give its feature folder a vocabulary.npz"
            )
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            with torch.no_grad():
                emb = self._encode_text(missing).float()  # [k, D]
            emb = F.normalize(emb, dim=-1).to(self.device)
            for t, e in zip(missing, emb, strict=True):
                self._text_cache[t] = e
        out = torch.stack([self._text_cache[t] for t in texts])  # [K, D]
        for t in texts:
            self._text_cache.move_to_end(t)
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        return out

    def _encode_text(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - overridden
        raise M3Error(f"model '{self.name}' has no text encoder")

    # ---- metadata -------------------------------------------------------------------------
    def vocabulary(self) -> list[str] | None:
        """A fixed list of texts the model knows (e.g. class names), or None (open vocabulary)."""
        return None

    def meta(self) -> dict[str, Any]:
        """What to save beside extracted features (meta.json)."""
        return {
            "model": self.name,
            "dim": self.dim,
            "stride": self.stride,
            "has_text": self.has_text,
            "preprocess": self.preprocess.to_dict(),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, stride={self.stride}, "
            f"has_text={self.has_text}, device={self.device})"
        )
