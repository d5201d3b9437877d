"""One call from a dataset folder to a memory: extract missing features, then train.

Used by the ROS trainer node and the CLI. A feature name that is a registered extractor
("effnet", "clip", ...) is extracted into ``DATA/features/<name>`` when frames lack it (weights
from ``weights_dir`` / ``$M3_WEIGHTS_DIR``, never downloaded); any other name must already be
there in the precomputed format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from m3_core.train.config import TrainConfig
from m3_core.train.trainer import Progress, Trainer, TrainResult


def ensure_features(
    dataset,
    cfg: TrainConfig,
    *,
    weights_dir: str | None = None,
    on_progress: Callable[[Progress], None] = lambda p: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Extract every configured feature that a registered extractor can provide and that
    some frames lack; leave precomputed ones to the trainer's own check."""
    from m3_core.extractors import list_extractors
    from m3_core.extractors.extract import extract_features, missing_frames

    known = set(list_extractors()) - {"precomputed"}
    for spec in cfg.features:
        todo = missing_frames(dataset, spec.name)
        if not todo or spec.name not in known:
            continue
        weights = None
        if weights_dir and (Path(weights_dir) / spec.name).exists():
            weights = str(Path(weights_dir) / spec.name)
        on_progress(Progress("extracting", 0, len(todo)))
        extract_features(
            dataset,
            spec.name,
            weights=weights,
            device=cfg.device,
            on_progress=lambda done, total: on_progress(Progress("extracting", done, total)),
            should_stop=should_stop,
        )


def train_memory(
    data: str | Path,
    cfg: TrainConfig,
    out_dir: str | Path,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    weights_dir: str | None = None,
    incremental: bool = False,
) -> TrainResult:
    from m3_core.data import load_dataset

    on_progress = on_progress or (lambda p: None)
    should_stop = should_stop or (lambda: False)
    dataset = load_dataset(data, max_size=tuple(cfg.max_image_size))
    ensure_features(
        dataset, cfg, weights_dir=weights_dir, on_progress=on_progress, should_stop=should_stop
    )
    trainer = Trainer(
        dataset,
        cfg,
        out_dir,
        on_progress=on_progress,
        should_stop=should_stop,
        incremental=incremental,
    )
    return trainer.run()
