"""Training: losses, the M3 training loop (gsplat DefaultStrategy), checkpoints and resume."""

from m3_core.train.config import DensifyConfig, FeatureSpec, OptimConfig, TrainConfig
from m3_core.train.trainer import Progress, Trainer, TrainResult, resolve_device

__all__ = [
    "DensifyConfig",
    "FeatureSpec",
    "OptimConfig",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "resolve_device",
]
