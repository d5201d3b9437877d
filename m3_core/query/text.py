"""Text -> embedding in a memory feature's space, cached.

A memory folder is self-contained for text queries: the trainer copies each feature's
``vocabulary.npz`` (``texts`` [K], ``embeddings`` [K, d]) and ``meta.json`` (``model``: the
extractor that made the features, ``has_text``) to ``MEM/features/<name>/``. For a text:

1. exact lookup in the vocabulary (whitespace collapsed, case-insensitive; then also with a
   leading "a/an/the" dropped and "_"/"-" read as spaces);
2. else the text tower of the extractor named in ``meta.json`` (built on first use, weights
   from ``weights_dir`` / ``$M3_WEIGHTS_DIR``, never downloaded);
3. else an :class:`M3Error` naming what is missing and a few vocabulary entries.

A feature is *closed-vocabulary* when it has a vocabulary: ``m3 extract`` writes one only for
models with a fixed set of texts (effnet's 1000 ImageNet classes, whose "text tower" knows
nothing else) and the synthetic "labels"; then relevancy is a softmax over that vocabulary
(see relevancy.py). Without a vocabulary, the text tower embeds the query and the canonical
negatives (open vocabulary).
Embeddings are returned L2-normalised, float32, on the encoder's device.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from m3_core.errors import InvalidInputError, M3Error, UnknownModelError

_ARTICLE = re.compile(r"^(a|an|the)\s+")
_NOT_A_TOWER = ("precomputed", "synthetic-labels", "labels")


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _loose_key(text: str) -> str:
    return _ARTICLE.sub("", _key(text.replace("_", " ").replace("-", " ")))


@dataclass(frozen=True)
class Vocabulary:
    """Known texts of a feature and their unit embeddings [K, d]."""

    texts: tuple[str, ...]
    embeddings: torch.Tensor  # [K, d], unit rows

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.texts):
            raise InvalidInputError(
                f"vocabulary needs texts [K] and embeddings [K, d]; got {len(self.texts)} "
                f"texts, embeddings {tuple(self.embeddings.shape)}"
            )
        exact: dict[str, int] = {}
        loose: dict[str, int] = {}
        for i, t in enumerate(self.texts):
            exact.setdefault(_key(t), i)
            loose.setdefault(_loose_key(t), i)
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_loose", loose)

    def index(self, text: str) -> int | None:
        """Row of ``text`` (see module doc for the matching rules), or None."""
        i = self._exact.get(_key(text))  # type: ignore[attr-defined]
        return i if i is not None else self._loose.get(_loose_key(text))  # type: ignore

    def examples(self, n: int = 8) -> str:
        shown = ", ".join(repr(t) for t in self.texts[:n])
        return shown + (f", ... ({len(self.texts)} in all)" if len(self.texts) > n else "")


class TextEncoder:
    """Embeds query texts for the features of one memory (module doc).

    ``memory_dir``: the memory folder (``MEM/features/<name>/{vocabulary.npz,meta.json}``), or
    None with ``vocabularies`` / ``metas`` given directly (tests, in-memory use); entries given
    directly override the folder's. ``weights_dir``: a folder holding extractor weights as
    ``<model>`` (folder) or ``<model>.<ext>`` (file), like ``$M3_WEIGHTS_DIR``; ``device``:
    where embeddings are computed and returned.
    """

    def __init__(
        self,
        memory_dir: str | Path | None = None,
        *,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        vocabularies: dict[str, tuple[list[str], torch.Tensor]] | None = None,
        metas: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.memory_dir = Path(memory_dir) if memory_dir is not None else None
        self.weights_dir = weights_dir
        self.device = torch.device(device)
        self._vocab: dict[str, Vocabulary | None] = {}
        self._meta: dict[str, dict[str, Any]] = dict(metas or {})
        for name, (texts, emb) in (vocabularies or {}).items():
            self._vocab[name] = self._make_vocab(texts, emb)
        self._towers: dict[str, Any] = {}
        self._cache: dict[tuple[str, str], torch.Tensor] = {}  # (feature, text) -> [d]
        self._lock = threading.Lock()

    # -- what a feature offers --------------------------------------------------------------
    def _make_vocab(self, texts, emb) -> Vocabulary:
        e = torch.as_tensor(emb, dtype=torch.float32).to(self.device)
        e = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return Vocabulary(tuple(str(t) for t in texts), e)

    def _store(self, feature: str):
        from m3_core.data.features import FeatureStore

        if self.memory_dir is None:
            return None
        return FeatureStore(self.memory_dir, feature)

    def vocabulary(self, feature: str) -> Vocabulary | None:
        """The feature's vocabulary, or None."""
        if feature not in self._vocab:
            store = self._store(feature)
            v = store.vocabulary() if store is not None else None
            self._vocab[feature] = self._make_vocab(*v) if v is not None else None
        return self._vocab[feature]

    def meta(self, feature: str) -> dict[str, Any]:
        """The feature's meta.json ({} when absent)."""
        if feature not in self._meta:
            store = self._store(feature)
            self._meta[feature] = (store.meta() if store is not None else None) or {}
        return self._meta[feature]

    def tower_name(self, feature: str) -> str | None:
        """Registered extractor whose text tower embeds this feature's queries, or None."""
        from m3_core.extractors.registry import list_extractors

        meta = self.meta(feature)
        name = meta.get("model")
        if not isinstance(name, str) or meta.get("has_text") is False:
            return None
        if name in _NOT_A_TOWER or name not in list_extractors():
            return None
        return name

    def can_embed(self, feature: str) -> bool:
        return self.vocabulary(feature) is not None or self.tower_name(feature) is not None

    def is_closed(self, feature: str) -> bool:
        """A vocabulary (module doc): relevancy is a softmax over the vocabulary."""
        return self.vocabulary(feature) is not None

    # -- embedding --------------------------------------------------------------------------
    def embed(self, feature: str, texts: list[str] | tuple[str, ...]) -> torch.Tensor:
        """texts [K] -> unit embeddings [K, d] float32 (cached per feature and text)."""
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise InvalidInputError("texts must be a non-empty list of strings")
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise InvalidInputError(f"query text must be a non-empty string, got {t!r}")
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if (feature, _key(t)) not in self._cache]
            if missing:
                for t, e in zip(missing, self._embed_uncached(feature, missing)):
                    self._cache[(feature, _key(t))] = e
            return torch.stack([self._cache[(feature, _key(t))] for t in texts])

    def _embed_uncached(self, feature: str, texts: list[str]) -> list[torch.Tensor]:
        vocab = self.vocabulary(feature)
        rows: dict[str, torch.Tensor] = {}
        rest = []
        for t in texts:
            i = vocab.index(t) if vocab is not None else None
            if i is None:
                rest.append(t)
            else:
                rows[t] = vocab.embeddings[i]
        if rest:
            emb = self._tower(feature, vocab, rest).encode_text([t.strip() for t in rest])
            emb = emb.float().to(self.device)
            emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            if vocab is not None and emb.shape[1] != vocab.embeddings.shape[1]:
                raise M3Error(
                    f"feature {feature!r}: text tower gives {emb.shape[1]}-d embeddings but the "
                    f"vocabulary is {vocab.embeddings.shape[1]}-d"
                )
            rows.update(zip(rest, emb))
        return [rows[t] for t in texts]

    def _tower(self, feature: str, vocab: Vocabulary | None, texts: list[str]):
        name = self.tower_name(feature)
        if name is None:
            if vocab is None and not self.meta(feature) and self._store(feature) is None:
                raise UnknownModelError(f"no vocabulary or metadata for feature {feature!r}")
            where = (
                f"{self.memory_dir / 'features' / feature}" if self.memory_dir else "(in memory)"
            )
            if vocab is None:
                raise M3Error(
                    f"feature {feature!r} cannot embed text: no vocabulary.npz and no extractor "
                    f"with a text encoder named in meta.json at {where}"
                )
            raise InvalidInputError(
                f"{texts[0]!r} is not in the closed vocabulary of feature {feature!r} and it has "
                f"no text encoder; known texts: {vocab.examples()}"
            )
        if name not in self._towers:
            from m3_core.extractors.registry import create_extractor

            meta = self.meta(feature)
            weights = self._weights_for(name, meta)
            # the builder options the features were made with (e.g. arch/tag of a checkpoint)
            opts = {k: v for k, v in meta.get("options", {}).items() if k in ("arch", "tag")}
            self._towers[name] = create_extractor(
                name, weights=weights, device=self.device, **opts
            )
        return self._towers[name]

    def _weights_for(self, name: str, meta: dict[str, Any]) -> Path | None:
        """``weights_dir/<name>`` or ``weights_dir/<name>.<ext>`` if present; else the local
        weights the features were extracted with (``meta.json`` "source": text and image
        embeddings must come from the same model); else None (the extractor then looks in
        ``$M3_WEIGHTS_DIR`` and its own offline cache)."""
        from m3_core.extractors.weights import WEIGHT_SUFFIXES

        if self.weights_dir is not None:
            base = Path(self.weights_dir).expanduser()
            for cand in (base / name, *(base / f"{name}{s}" for s in WEIGHT_SUFFIXES)):
                if cand.exists():
                    return cand
        source = meta.get("source")
        if isinstance(source, str) and source and Path(source).expanduser().exists():
            return Path(source).expanduser()
        return None
