"""``MemoryPredictor``: a loaded memory that answers text queries (SamPredictor style).

The expensive parts are computed once and cached: per-Gaussian decoded features
(:class:`~m3_core.query.features.GaussianFeatures`), text embeddings
(:class:`~m3_core.query.text.TextEncoder`) and the query-independent half of relevancy
(:class:`~m3_core.query.relevancy.RelevancyScorer`). A query then costs one matrix-vector
product over the Gaussians, plus clustering for :meth:`ground`. All caches follow the memory:
if its tensors change (training, densification) they are rebuilt on the next query.

``feature=None`` means :attr:`default_feature`, the first of the memory's features (in layout
order) that can embed text; an unknown name raises :class:`UnknownModelError`. Results are in
the memory's world frame; arrays come back as numpy on the CPU. Thread-safe for concurrent
queries (the ROS memory server calls it from several callbacks).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import torch

from m3_core.errors import InvalidInputError, M3Error, UnknownModelError
from m3_core.memory.grounding import GroundingIndex
from m3_core.query.features import GaussianFeatures
from m3_core.query.ground import GroundedObject, GroundParams, ground
from m3_core.query.relevancy import RelevancyConfig, RelevancyScorer
from m3_core.query.text import TextEncoder
from m3_core.types import Camera

log = logging.getLogger(__name__)
SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic: rgb = sh0 * C0 + 0.5
IMAGE_MIN_ALPHA = 0.5  # relevancy_image is 0 where the memory is less opaque than this


class MemoryPredictor:
    """Text queries against one :class:`~m3_core.memory.Memory` (module doc)."""

    def __init__(
        self,
        memory,
        text_encoder: TextEncoder,
        *,
        relevancy: RelevancyConfig | None = None,
        ground_params: GroundParams | None = None,
        index: GroundingIndex | None = None,
    ) -> None:
        """``index``: the memory's grounding index (lifted queries, visibility, fitted
        temperatures; see m3_core.memory.grounding). Without one, grounding decodes each
        Gaussian's own query and uses the configured / feature-meta temperature."""
        self.memory = memory
        self.text_encoder = text_encoder
        self.relevancy_config = relevancy or RelevancyConfig()
        self.ground_params = ground_params or GroundParams()
        if index is not None and index.num_gaussians != memory.num_gaussians:
            raise InvalidInputError(
                f"grounding index has {index.num_gaussians} Gaussians, the memory "
                f"{memory.num_gaussians}"
            )
        self.index = index
        self.features = GaussianFeatures(memory, index=index)
        self._scorers: dict[str, tuple[Hashable, RelevancyScorer]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        weights_dir: str | Path | None = None,
        **kwargs,
    ) -> MemoryPredictor:
        """Load the memory folder ``path`` (and its feature vocabularies / metadata)."""
        from m3_core.extractors.base import resolve_device
        from m3_core.memory import Memory

        dev = resolve_device(device)
        memory = Memory.load(path, dev)
        index = kwargs.pop("index", None) or load_or_build_index(path, memory, dev)
        return cls(
            memory, TextEncoder(path, weights_dir=weights_dir, device=dev), index=index, **kwargs
        )

    # -- features ---------------------------------------------------------------------------
    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.memory.layout.names)

    @property
    def default_feature(self) -> str:
        """The first feature (layout order) whose space text can be embedded into."""
        for name in self.feature_names:
            if self.text_encoder.can_embed(name):
                return name
        raise M3Error(
            f"no feature of this memory can embed text (features: "
            f"{', '.join(self.feature_names) or 'none'}); it needs a vocabulary.npz or an "
            "extractor with a text encoder in MEM/features/<name>/"
        )

    def _feature(self, feature: str | None) -> str:
        if feature is None or feature == "":
            return self.default_feature
        if feature not in self.feature_names:
            raise UnknownModelError(
                f"unknown feature {feature!r}; this memory has: "
                f"{', '.join(self.feature_names) or 'none'}"
            )
        return feature

    def embed(self, text: str, feature: str | None = None) -> torch.Tensor:  # [d]
        """Unit text embedding of ``text`` in ``feature``'s space."""
        return self.text_encoder.embed(self._feature(feature), [text])[0]

    def scorer(self, feature: str | None = None) -> RelevancyScorer:
        """The cached relevancy scorer over all Gaussians of ``feature``."""
        name = self._feature(feature)
        feats = self.features.get(name)  # [N, d]; rebuilt when the memory changed
        with self._lock:
            hit = self._scorers.get(name)
            if hit is not None and hit[0] is feats:
                return hit[1]
            scorer = self._make_scorer(name, feats)
            self._scorers[name] = (feats, scorer)
            return scorer

    def _make_scorer(self, name: str, feats: torch.Tensor) -> RelevancyScorer:
        cfg = self.relevancy_config
        kw: dict[str, torch.Tensor] = {}
        if self.text_encoder.is_closed(name):
            kw["vocabulary"] = self.text_encoder.vocabulary(name).embeddings  # type: ignore
        else:
            kw["negatives"] = self.text_encoder.embed(name, list(cfg.negatives))
        other = next(iter(kw.values()))
        if other.shape[1] != feats.shape[1]:
            raise M3Error(
                f"feature {name!r}: text embeddings are {other.shape[1]}-d but the memory "
                f"decodes {feats.shape[1]}-d features (vocabulary/extractor mismatch)"
            )
        kw = {k: v.to(feats.device) for k, v in kw.items()}
        temperature = self.temperature(name)
        return RelevancyScorer(feats, temperature=temperature, **kw)

    def temperature(self, feature: str | None = None) -> float:
        """The relevancy temperature of ``feature``: fitted on the training views (grounding
        index) when there is one, else the feature source's own (meta.json
        "relevancy_temperature"), else the configured default (LERF's 0.1)."""
        name = self._feature(feature)
        if self.index is not None and name in self.index.temperatures:
            return float(self.index.temperatures[name])
        meta = self.text_encoder.meta(name)
        return float(meta.get("relevancy_temperature", self.relevancy_config.temperature))

    def prepare(self, features: list[str] | None = None) -> None:
        """Build the caches now (otherwise the first query of each feature pays for them)."""
        for name in features or [self.default_feature]:
            self.scorer(name)

    # -- 3D queries -------------------------------------------------------------------------
    def relevancy(self, text: str, feature: str | None = None) -> torch.Tensor:  # [N]
        """Relevancy in [0, 1] of every Gaussian to ``text`` (see relevancy.py)."""
        name = self._feature(feature)
        return self.scorer(name)(self.text_encoder.embed(name, [text])[0])

    def ground(
        self,
        text: str,
        feature: str | None = None,
        min_score: float | None = None,
        max_results: int | None = None,
        *,
        verify: Callable[[GroundedObject], bool] | None = None,
    ) -> list[GroundedObject]:
        """Objects matching ``text``, best first; ``[]`` when nothing is relevant enough."""
        params = self.ground_params
        changes = {}
        if min_score is not None:
            changes["min_score"] = float(min_score)
        if max_results is not None:
            changes["max_results"] = int(max_results)
        if changes:
            params = dataclasses.replace(params, **changes)  # validates
        name = self._feature(feature)
        rel = self.relevancy(text, name)
        return ground(
            self.memory, rel, params, label=text.strip(), verify=verify,
            features=self.features.get(name), visibility=self.features.visibility(),
        )  # fmt: skip

    def top_points(
        self, text: str, feature: str | None = None, k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """Centres [k, 3] and relevancy [k] of the k most relevant opaque Gaussians."""
        if int(k) < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        rel = self.relevancy(text, feature)  # [N]
        g = self.memory.gaussians
        with torch.no_grad():
            opaque = torch.sigmoid(g["opacities"].detach()) >= self.ground_params.min_opacity
            rel = torch.where(opaque, rel, torch.full_like(rel, -1.0))
            vals, idx = torch.topk(rel, min(int(k), rel.shape[0]))
            keep = vals >= 0
            pts = g["means"].detach()[idx[keep]].float().cpu().numpy()
        return pts.reshape(-1, 3), vals[keep].float().cpu().numpy()

    # -- 2D queries -------------------------------------------------------------------------
    @torch.no_grad()
    def relevancy_image(
        self, text: str, camera: Camera, feature: str | None = None
    ) -> np.ndarray:  # [H, W] float32 in [0, 1]
        """Render the query map at ``camera``, GMA-decode it per pixel, score against
        ``text``. Pixels where the memory's alpha is below 0.5 (empty space) score 0."""
        from m3_core.memory.render import render_gaussians

        if not isinstance(camera, Camera):
            raise InvalidInputError(f"camera must be an m3_core Camera, got {type(camera)}")
        name = self._feature(feature)
        text_emb = self.text_encoder.embed(name, [text])[0]
        scorer = self.scorer(name)  # for the negatives / vocabulary (already normalised)
        out = render_gaussians(
            self.memory.gaussians, camera, sh_degree=self.memory.config.sh_degree
        )
        q = out.queries[..., self.memory.layout.slice(name)]  # [H, W, s]
        feats = self.memory.decode(name, q.reshape(-1, q.shape[-1]))  # [H*W, d]
        kw = {"vocabulary" if scorer.closed else "negatives": scorer.others}
        rel = RelevancyScorer(feats, temperature=scorer.temperature, **kw)(text_emb)
        rel = rel.reshape(camera.height, camera.width)
        rel = torch.where(out.alpha >= IMAGE_MIN_ALPHA, rel, torch.zeros_like(rel))
        return rel.float().cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def render(self, camera: Camera, features: list[str]) -> dict[str, np.ndarray]:
        """{"rgb" [H, W, 3] in [0, 1], "depth" [H, W], "alpha" [H, W], name: [H, W, d]}."""
        from m3_core.memory.render import render_memory

        names = list(features)
        for n in names:
            self._feature(n)
        out = render_memory(self.memory, camera, names)
        return {k: v.detach().float().cpu().numpy() for k, v in out.items()}

    @torch.no_grad()
    def gaussian_cloud(
        self, max_points: int, relevancy: torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``max_points`` Gaussian centres [M, 3] with colours [M, 3] in [0, 1]: their
        base colour, or the turbo colour map of ``relevancy`` [N] (e.g. of the last query).

        Gaussians at least ``ground_params.min_opacity`` opaque are kept; if more remain, a
        fixed (seeded) random subset is returned, so repeated calls agree.
        """
        if int(max_points) < 0:
            raise InvalidInputError(f"max_points must be >= 0, got {max_points}")
        g = self.memory.gaussians
        keep = torch.sigmoid(g["opacities"].detach()) >= self.ground_params.min_opacity
        idx = torch.nonzero(keep).reshape(-1).cpu()
        if idx.numel() > int(max_points):
            perm = torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(0))
            idx = idx[perm[: int(max_points)]].sort().values
        idx = idx.to(g["means"].device)
        pts = g["means"].detach()[idx].float().cpu().numpy()
        if relevancy is not None:
            from matplotlib import colormaps

            r = relevancy.detach()[idx].clamp(0, 1).float().cpu().numpy()
            rgb = colormaps["turbo"](r)[:, :3].astype(np.float32)
        else:
            rgb = (g["sh0"].detach()[idx, 0] * SH_C0 + 0.5).clamp(0, 1).float().cpu().numpy()
        return pts.reshape(-1, 3), rgb.reshape(-1, 3)


def load_or_build_index(path: str | Path, memory, device) -> GroundingIndex | None:
    """The grounding index saved beside the memory; if it is missing or stale and the memory
    lists its training cameras, lift over them now (no temperature fit: that needs the real
    feature maps) and try to save the result; None for memories without cameras."""
    from m3_core.memory.grounding import (
        build_grounding_index,
        cameras_from_json,
        load_grounding_index,
        memory_sha,
    )

    index = load_grounding_index(path, memory, device)
    cams = memory.extra.get("cameras")
    if index is not None or not cams:
        return index
    log.warning("%s: no grounding index; lifting queries over %d views", path, len(cams))
    index = build_grounding_index(memory, cameras_from_json(cams), memory_sha=memory_sha(path))
    try:
        index.save(path)
    except OSError as exc:  # a read-only memory folder still serves
        log.warning("could not save the grounding index in %s: %s", path, exc)
    return index
