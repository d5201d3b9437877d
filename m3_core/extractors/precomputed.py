"""Precomputed features as a first-class source (bring any model: SEEM, LLaMA, ...).

The maps live in ``DATA/features/<name>/<image stem>.npy`` (format: ``m3_core.data.features``)
and are read by the training code directly; this extractor is the *query* side: its text
embeddings come from the folder's ``vocabulary.npz`` (texts [K] + embeddings [K, D]), looked
up by exact text (then case-insensitively). It cannot compute features for new images.

``create_extractor("precomputed", weights="DATA/features/seem")``, or
:func:`open_precomputed(dataset_root, name)`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch

from m3_core.errors import InvalidInputError, M3Error, MissingWeightsError
from m3_core.extractors.base import CPU, FeatureExtractor, Preprocess


def build_precomputed(
    *, weights: str | Path | None = None, device: torch.device = CPU, **kw: Any
) -> PrecomputedExtractor:
    """Registry builder: ``weights`` is the feature folder ``DATA/features/<name>``."""
    if kw:
        raise InvalidInputError(f"precomputed: unexpected options {sorted(kw)}")
    if weights is None:
        raise MissingWeightsError(
            "model 'precomputed' needs its feature folder: weights=DATA/features/<name> "
            "(holding <image stem>.npy maps and optionally vocabulary.npz)"
        )
    folder = Path(weights)
    if not folder.is_dir():
        raise MissingWeightsError(f"precomputed feature folder not found: {folder}")
    return open_precomputed(folder.parent.parent, folder.name, device=device)


def open_precomputed(
    dataset_root: str | Path, name: str, *, device: str | torch.device = "cpu"
) -> PrecomputedExtractor:
    """The query side of ``dataset_root/features/<name>/``."""
    from m3_core.data.features import FeatureStore

    return PrecomputedExtractor(FeatureStore(dataset_root, name), device=torch.device(device))


class PrecomputedExtractor(FeatureExtractor):
    """Text lookup in a feature folder's vocabulary; ``encode_image`` is not available."""

    stride = 1

    def __init__(self, store: Any, *, device: torch.device) -> None:
        super().__init__()
        self.store = store
        self.name = store.name
        self.device = device
        if not store.stems() and store.meta() is None:
            raise MissingWeightsError(f"no precomputed features in {store.dir}")
        self.dim = int(store.dim)
        self.preprocess = Preprocess((0.0,) * 3, (1.0,) * 3, 1, 1, 1)  # unused: never resizes
        vocab = store.vocabulary()
        self.has_text = vocab is not None
        self._texts: list[str] = vocab[0] if vocab else []
        self._emb = vocab[1].to(device) if vocab else None  # [K, D]
        self._lookup: dict[str, int] = {}
        for i, t in enumerate(self._texts):
            self._lookup.setdefault(t, i)
        for i, t in enumerate(self._texts):
            self._lookup.setdefault(t.lower(), i)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise M3Error(
            f"'{self.name}' features are precomputed: they are read from {self.store.dir}, "
            "not computed from images"
        )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - never called
        raise M3Error("precomputed features cannot encode images")

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        if not self.has_text:
            from m3_core.extractors.base import validate_texts

            validate_texts(texts)
            raise M3Error(
                f"features '{self.name}' have no text encoder and no vocabulary.npz in "
                f"{self.store.dir}: add one (texts [K] + embeddings [K, D]) to query them"
            )
        return super().encode_text(texts)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            i = self._lookup.get(t, self._lookup.get(t.lower()))
            if i is None:
                near = difflib.get_close_matches(t, self._texts, n=3, cutoff=0.5)
                known = near or self._texts[:5]
                raise InvalidInputError(
                    f"{t!r} is not in the vocabulary of '{self.name}' ({len(self._texts)} "
                    f"entries, e.g. {', '.join(repr(k) for k in known)})"
                )
            rows.append(i)
        return self._emb[torch.tensor(rows, device=self.device)]  # [K, D]

    def vocabulary(self) -> list[str]:
        return list(self._texts)

    def meta(self) -> dict[str, Any]:
        return {"model": self.name, "dim": self.dim, "has_text": self.has_text,
                "source": str(self.store.dir)}  # fmt: skip
