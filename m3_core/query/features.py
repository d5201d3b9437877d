"""Per-Gaussian decoded features: every Gaussian's own principal query through GMA, cached.

A Gaussian's feature for model m is ``GMA_m(q_i[slice_m])``, i.e. what a pixel covered by that
Gaussian alone decodes to (the rendered query is ``sum_i q_i alpha_i T_i`` and GMA compares
by cosine, so the scale ``alpha_i T_i`` of a lone Gaussian does not matter). Decoding all N
Gaussians costs O(N t_m d_m) per model; it is done once, L2-normalised, and kept, so a text
query then costs one [N, d] x [d] product.

The cache entry of a model is valid while the tensors it was computed from are unchanged:
its signature holds, for the queries, the model's projection and its PSC bank, the tensor
identity, storage pointer, shape and autograd version counter (bumped by every in-place
write, e.g. an optimizer step), plus ``memory.version`` when the memory keeps one. A trainer
step, densification (new tensors) or a reload therefore invalidates it; nothing else does.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import torch

from m3_core.query.relevancy import l2_normalize


def _tensor_sig(t: object) -> Hashable:
    if not isinstance(t, torch.Tensor):
        return None
    return (id(t), t.data_ptr(), t._version, t.shape, t.dtype, t.device)


def _entry(container: object, name: str) -> object:
    if container is None:
        return None
    try:
        return container[name]  # type: ignore[index]
    except (KeyError, TypeError, IndexError):
        return None


def memory_signature(memory, name: str) -> Hashable:
    """What the decoded features of model ``name`` depend on (see module doc)."""
    return (
        id(memory),
        getattr(memory, "version", None),
        _tensor_sig(memory.gaussians["queries"]),
        _tensor_sig(_entry(getattr(memory, "projections", None), name)),
        _tensor_sig(_entry(getattr(memory, "banks", None), name)),
        memory.config.gma_temperature,
    )


@torch.no_grad()
def decode_gaussian_features(
    memory, name: str, *, chunk: int = 16384, queries: torch.Tensor | None = None
) -> torch.Tensor:
    """Unit decoded features [N, d_m] of every Gaussian for model ``name`` (uncached), from
    ``queries`` [N, Q] when given (e.g. the grounding index's lifted queries) or the
    Gaussians' own."""
    sl = memory.layout.slice(name)  # raises UnknownModelError listing the known names
    q = memory.gaussians["queries"].detach() if queries is None else queries  # [N, Q]
    first = l2_normalize(memory.decode(name, q[:chunk, sl]).float())  # [<=chunk, d_m]
    if q.shape[0] <= chunk:
        return first
    # one [N, d_m] buffer filled a chunk at a time: the peak is the result plus one chunk
    # (a list of chunks, their concatenation and its normalised copy held three at 1M x 512)
    out = torch.empty(q.shape[0], first.shape[1], dtype=first.dtype, device=first.device)
    out[:chunk] = first
    for i in range(chunk, q.shape[0], chunk):
        out[i : i + chunk] = l2_normalize(memory.decode(name, q[i : i + chunk, sl]).float())
    return out


class GaussianFeatures:
    """Cache of :func:`decode_gaussian_features` per model, for one memory.

    ``get(name)`` decodes on first use and whenever the memory changed since (module doc);
    thread-safe. ``invalidate()`` drops everything (for changes the signature cannot see).
    """

    def __init__(self, memory, *, chunk: int = 16384, index=None) -> None:
        self.memory = memory
        self.chunk = int(chunk)
        self.index = index  # a GroundingIndex of this memory, or None
        self._index_sig = _tensor_sig(memory.gaussians["queries"]) if index is not None else None
        self._cache: dict[str, tuple[Hashable, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.decode_count = 0  # how many times a model was (re)decoded (for tests, stats)

    def lifted_queries(self) -> torch.Tensor | None:
        """The index's lifted queries [N, Q] while the memory's queries are the ones the index
        was attached to (None once training or growth changed them: own queries then)."""
        if self.index is None or _tensor_sig(self.memory.gaussians["queries"]) != self._index_sig:
            return None
        return self.index.queries

    def visibility(self) -> torch.Tensor | None:
        """The index's per-Gaussian visibility [N] (None: no valid index)."""
        return None if self.lifted_queries() is None else self.index.visibility

    def signature(self, name: str) -> Hashable:
        return (memory_signature(self.memory, name), self.lifted_queries() is not None)

    def is_cached(self, name: str) -> bool:
        hit = self._cache.get(name)
        return hit is not None and hit[0] == self.signature(name)

    def get(self, name: str) -> torch.Tensor:  # [N, d_m], unit rows
        with self._lock:
            sig = self.signature(name)
            hit = self._cache.get(name)
            if hit is not None and hit[0] == sig:
                return hit[1]
            feats = decode_gaussian_features(
                self.memory, name, chunk=self.chunk, queries=self.lifted_queries()
            )
            self._cache[name] = (sig, feats)
            self.decode_count += 1
            return feats

    def invalidate(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)
