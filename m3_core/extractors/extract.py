"""Compute a dataset's features with an extractor and store them in the precomputed format.

Writes ``DATA/features/<name>/<image stem>.npy`` (float16 [h, w, D]), ``meta.json`` (model,
dim, preprocessing, weights source) and, for models with a fixed vocabulary (effnet's 1000
ImageNet classes), ``vocabulary.npz``. Frames whose map exists are skipped, so an interrupted
run resumes; every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from m3_core.errors import InvalidInputError, M3Error

MATCH_KEYS = ("model", "dim", "stride", "preprocess", "source", "backend")


def _batches(sizes: list[tuple[int, int]], todo: list[int], batch: int) -> list[list[int]]:
    """Consecutive frames of equal image size, at most ``batch`` per group."""
    groups: list[list[int]] = []
    for i in todo:
        if groups and len(groups[-1]) < batch and sizes[groups[-1][0]] == sizes[i]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def missing_frames(dataset, name: str) -> list[int]:
    """Indices of frames without a feature map in ``DATA/features/<name>``."""
    from m3_core.data import FeatureStore

    store = FeatureStore(dataset.root, name)
    return [i for i, f in enumerate(dataset.frames) if not store.exists(f.name)]


def extract_features(
    dataset,
    model: str,
    *,
    weights: str | None = None,
    device: str = "auto",
    name: str | None = None,
    batch_size: int = 4,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,  # (done, total)
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Extract ``model`` features for every frame of ``dataset``; returns a summary dict."""
    from m3_core.data import FeatureStore
    from m3_core.extractors.registry import create_extractor

    if model == "precomputed":
        raise M3Error(
            "'precomputed' features are read, not computed: put <stem>.npy maps in "
            "DATA/features/<name>/ (see the README)"
        )
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be >= 1, got {batch_size}")
    kw = dict(options or {})
    extractor = create_extractor(model, weights=weights, device=device, **kw)
    store = FeatureStore(dataset.root, name or extractor.name)
    meta = {**extractor.meta(), "options": {k: str(v) for k, v in sorted(kw.items())}}
    old = store.meta()
    if old is not None and not overwrite and store.stems():
        diff = [k for k in MATCH_KEYS if old.get(k) != meta.get(k)]
        if diff:
            raise M3Error(
                f"{store.dir} holds features made with other settings ({', '.join(diff)} "
                "differ): pass --overwrite to recompute them, or --name to write elsewhere"
            )
    store.save_meta(meta)
    vocab = extractor.vocabulary()
    if vocab and (overwrite or store.vocabulary() is None):
        store.save_vocabulary(vocab, extractor.encode_text(vocab).cpu())

    names = [f.name for f in dataset.frames]
    todo = [i for i, n in enumerate(names) if overwrite or not store.exists(n)]
    sizes = [(f.camera.height, f.camera.width) for f in dataset.frames]
    done, grid = 0, None
    for group in _batches(sizes, todo, batch_size):
        if should_stop is not None and should_stop():
            break
        images = torch.stack([dataset.load_image(i) for i in group]).permute(0, 3, 1, 2)
        feats = extractor.encode_image(images)  # [B, D, h, w]
        maps = feats.permute(0, 2, 3, 1).to(torch.float16).cpu().numpy()  # [B, h, w, D]
        for i, m in zip(group, maps, strict=True):
            store.save(names[i], m)
        grid = tuple(maps.shape[1:3])
        done += len(group)
        if on_progress is not None:
            on_progress(done, len(todo))
    return {
        "dir": str(store.dir),
        "name": store.name,
        "written": done,
        "skipped": len(names) - len(todo),
        "remaining": len(todo) - done,
        "grid": grid,
        "dim": extractor.dim,
    }
