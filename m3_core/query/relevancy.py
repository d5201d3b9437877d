"""Relevancy of features to a text query, in [0, 1] and comparable across queries.

Features and text embeddings are compared by cosine (both L2-normalised here). Raw cosines
are not comparable across queries (CLIP scores every text against every image around 0.2),
so the score is made *relative*:

- **open vocabulary** (a model with a text tower, e.g. CLIP): LERF's relevancy. For each
  canonical negative text n_j ("object", "things", "stuff", "texture" by default) take the
  pairwise softmax of (query, n_j) with temperature T and keep the worst case:
  ``r = min_j exp(c_q / T) / (exp(c_q / T) + exp(c_j / T)) = min_j sigmoid((c_q - c_j) / T)``.
  LERF uses T = 0.1 (softmax of 10 * cos). r > 0.5 means "closer to the query than to every
  generic negative".
- **closed vocabulary** (labels, ImageNet classes, ... without a text tower): softmax over
  the whole vocabulary, ``r = exp(c_q / T) / sum_k exp(c_k / T)``, so an absent class (every
  feature matches some other class better) scores low instead of being forced to an answer.
  A query embedding that is not a vocabulary row joins the softmax as one more class.

:func:`relevancy_open` and :func:`relevancy_closed` are the plain definitions (the slow,
obvious twins); :class:`RelevancyScorer` precomputes the query-independent part for a fixed
feature set (the negatives' cosines, or the vocabulary log-sum-exp), so scoring N Gaussians
against a new query costs one [N, d] x [d] product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from m3_core.errors import InvalidInputError

DEFAULT_NEGATIVES: tuple[str, ...] = ("object", "things", "stuff", "texture")


@dataclass(frozen=True)
class RelevancyConfig:
    """How relevancy is computed (see module doc)."""

    negatives: tuple[str, ...] = DEFAULT_NEGATIVES  # canonical negatives (open vocabulary)
    temperature: float = 0.1  # softmax temperature T on cosines (LERF: 0.1)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise InvalidInputError(f"relevancy temperature must be > 0, got {self.temperature}")
        if not self.negatives or any(not str(n).strip() for n in self.negatives):
            raise InvalidInputError("relevancy needs at least one non-empty negative text")


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows of ``x`` [..., d] scaled to unit L2 norm (zero rows stay zero)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def _check(features: torch.Tensor, text: torch.Tensor, others: torch.Tensor, what: str) -> None:
    d = features.shape[-1]
    if text.shape != (d,) or others.ndim != 2 or others.shape[1] != d or others.shape[0] == 0:
        raise InvalidInputError(
            f"relevancy: features [..., {d}] need a text embedding [{d}] and {what} [M, {d}]; "
            f"got text {tuple(text.shape)}, {what} {tuple(others.shape)}"
        )


def relevancy_open(
    features: torch.Tensor,  # [..., d]
    text: torch.Tensor,  # [d]
    negatives: torch.Tensor,  # [M, d]
    temperature: float = 0.1,
) -> torch.Tensor:  # [...] in [0, 1]
    """LERF relevancy (module doc): min over negatives of the pairwise softmax."""
    _check(features, text, negatives, "negatives")
    f = l2_normalize(features.float())
    pos = f @ l2_normalize(text.float())  # [...]
    neg = f @ l2_normalize(negatives.float()).T  # [..., M]
    return torch.sigmoid((pos[..., None] - neg) / temperature).amin(dim=-1)


def relevancy_closed(
    features: torch.Tensor,  # [..., d]
    text: torch.Tensor,  # [d]
    vocabulary: torch.Tensor,  # [K, d]
    temperature: float = 0.1,
) -> torch.Tensor:  # [...] in [0, 1]
    """Softmax over the vocabulary (plus the query if it is not one of its rows)."""
    _check(features, text, vocabulary, "vocabulary")
    f = l2_normalize(features.float())
    t, v = l2_normalize(text.float()), l2_normalize(vocabulary.float())
    if not _in_vocabulary(t, v):
        v = torch.cat([v, t[None]], dim=0)  # [K + 1, d]
    logits = (f @ v.T) / temperature  # [..., K]
    return torch.exp((f @ t) / temperature - torch.logsumexp(logits, dim=-1)).clamp(0.0, 1.0)


def _in_vocabulary(t: torch.Tensor, v: torch.Tensor, tol: float = 1e-5) -> bool:
    """Whether unit vector ``t`` [d] is (numerically) one of the unit rows of ``v`` [K, d]."""
    return bool((v @ t).max() >= 1.0 - tol)


class RelevancyScorer:
    """Relevancy of a fixed feature set [N, d] to any number of queries, cheaply.

    Give exactly one of ``negatives`` [M, d] (open vocabulary) or ``vocabulary`` [K, d]
    (closed). Construction does the query-independent work once (O(N (M or K) d)); each call
    then costs O(N d). Results equal :func:`relevancy_open` / :func:`relevancy_closed`.
    """

    def __init__(
        self,
        features: torch.Tensor,  # [N, d]
        *,
        negatives: torch.Tensor | None = None,  # [M, d]
        vocabulary: torch.Tensor | None = None,  # [K, d]
        temperature: float = 0.1,
        chunk: int = 65536,
        half_queries: bool | None = None,
    ) -> None:
        """``half_queries``: answer queries from a float16 copy of the features (None: on
        CPU only). A query reads all N x d features, so it is memory-bound: half the bytes
        is ~3x faster on CPU (100k x 768: 14 ms vs 42 ms), with cosine errors ~1e-4."""
        if (negatives is None) == (vocabulary is None):
            raise InvalidInputError("RelevancyScorer needs exactly one of negatives / vocabulary")
        if features.ndim != 2:
            raise InvalidInputError(f"features must be [N, d], got {tuple(features.shape)}")
        if not temperature > 0:
            raise InvalidInputError(f"relevancy temperature must be > 0, got {temperature}")
        others = negatives if negatives is not None else vocabulary
        _check(features, features.new_zeros(features.shape[1]), others, "negatives/vocabulary")
        self.closed = vocabulary is not None
        self.temperature = float(temperature)
        self.features = l2_normalize(features.float())  # [N, d]
        self.others = l2_normalize(others.float().to(features.device))  # [M or K, d]
        parts = []
        with torch.no_grad():
            for i in range(0, self.features.shape[0], chunk):
                logits = self.features[i : i + chunk] @ self.others.T / self.temperature
                # open: the negatives' scaled cosines [n, M]; closed: the vocabulary LSE [n]
                parts.append(torch.logsumexp(logits, dim=-1) if self.closed else logits)
        empty = (0,) if self.closed else (0, self.others.shape[0])
        self._cached = torch.cat(parts) if parts else self.features.new_zeros(empty)
        if half_queries is None:
            half_queries = self.features.device.type == "cpu"
        self._query_features = self.features.half() if half_queries else self.features

    @property
    def num_features(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def __call__(self, text: torch.Tensor) -> torch.Tensor:  # text [d] -> [N] in [0, 1]
        d = self.features.shape[1]
        if text.shape != (d,):
            raise InvalidInputError(f"text embedding must be [{d}], got {tuple(text.shape)}")
        t = l2_normalize(text.float().to(self.features.device))
        pos = (self._query_features @ t.to(self._query_features.dtype)).float()
        pos = pos / self.temperature  # [N]
        if not self.closed:
            return torch.sigmoid(pos[:, None] - self._cached).amin(dim=-1)
        lse = self._cached
        if not _in_vocabulary(t, self.others):
            lse = torch.logaddexp(lse, pos)
        return torch.exp(pos - lse).clamp(0.0, 1.0)
