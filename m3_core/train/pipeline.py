"""One call from a dataset folder to a memory: extract missing features, then train.

Used by the ROS trainer node and the CLI. A feature name that is a registered extractor
("effnet", "clip", ...) is extracted into ``DATA/features/<name>`` when frames lack it (weights
from ``weights_dir`` / ``$M3_WEIGHTS_DIR``, never downloaded); any other name must already be
there in the precomputed format.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from m3_core.io import first_missing_folder
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
    some frames lack; leave precomputed ones to the trainer's own check.

    Features are extracted from the images as recorded (fitted in the default 980x720, as
    ``m3 extract`` does), not at the training size: a small ``max_image_size`` must not
    starve the foundation model (EfficientNet stops recognising objects at 160x120)."""
    from m3_core.data import load_dataset
    from m3_core.extractors import list_extractors
    from m3_core.extractors.extract import extract_features, missing_frames

    known = set(list_extractors()) - {"precomputed"}
    recorded = None  # the dataset at the extraction size, loaded when something is missing
    for spec in cfg.features:
        todo = missing_frames(dataset, spec.name)
        if not todo or spec.name not in known:
            continue
        if recorded is None:
            recorded = load_dataset(dataset.root)
        weights = None
        if weights_dir and (Path(weights_dir) / spec.name).exists():
            weights = str(Path(weights_dir) / spec.name)
        on_progress(Progress("extracting", 0, len(todo)))
        extract_features(
            recorded,
            spec.name,
            weights=weights,
            device=cfg.device,
            on_progress=lambda done, total: on_progress(Progress("extracting", done, total)),
            should_stop=should_stop,
        )


def sized_config(dataset, overrides: dict) -> TrainConfig:
    """``TrainConfig.sized_for`` the dataset's training frames and image size, on the device
    ``overrides["device"]`` ("auto" resolved here); the overrides win."""
    from m3_core.errors import InvalidInputError
    from m3_core.train.trainer import resolve_device

    ids = list(dataset.train_indices)
    if not ids:
        raise InvalidInputError(f"dataset {dataset.root} has no training frames")
    cam = dataset.frames[ids[0]].camera
    device = resolve_device(overrides.get("device", "auto")).type
    return TrainConfig.sized_for(device, len(ids), cam.width, cam.height, **overrides)


def train_memory(
    data: str | Path,
    cfg: TrainConfig | dict,
    out_dir: str | Path,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    weights_dir: str | None = None,
    incremental: bool = False,
    on_config: Callable[[TrainConfig], None] | None = None,
) -> TrainResult:
    """Extract missing features and train into ``out_dir``. A run that fails before its first
    checkpoint leaves nothing behind: the folders it created are removed.

    ``cfg`` may be a dict instead: the overrides of a schedule sized to the dataset and the
    device (:func:`sized_config`). ``on_config`` sees the resolved config before training."""
    from m3_core.data import load_dataset

    on_progress = on_progress or (lambda p: None)
    should_stop = should_stop or (lambda: False)
    created = first_missing_folder(out_dir)
    try:
        over = cfg if isinstance(cfg, dict) else {}
        max_size = over.get("max_image_size", getattr(cfg, "max_image_size", None))
        max_size = max_size or TrainConfig().max_image_size
        dataset = load_dataset(data, max_size=tuple(max_size))
        if isinstance(cfg, dict):
            cfg = sized_config(dataset, cfg)
        if on_config is not None:
            on_config(cfg)
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
    except BaseException:
        if created is not None and not (Path(out_dir) / "memory.json").exists():
            shutil.rmtree(created, ignore_errors=True)
        raise
