"""Querying a memory: per-Gaussian features, relevancy, 3D grounding and 2D metrics.

``MemoryPredictor.load(MEM).ground("red backpack")`` -> objects in the memory's world frame.
"""

from m3_core.query.features import GaussianFeatures, decode_gaussian_features
from m3_core.query.ground import (
    GroundedObject,
    GroundParams,
    cluster_dbscan,
    cluster_voxels,
    ground,
    ground_points,
)
from m3_core.query.metrics import GroundingMetrics, grounding_metrics, mask_iou, otsu_mask
from m3_core.query.predictor import MemoryPredictor
from m3_core.query.relevancy import (
    DEFAULT_NEGATIVES,
    RelevancyConfig,
    RelevancyScorer,
    relevancy_closed,
    relevancy_open,
)
from m3_core.query.text import TextEncoder, Vocabulary

__all__ = [
    "DEFAULT_NEGATIVES",
    "GaussianFeatures",
    "GroundParams",
    "GroundedObject",
    "GroundingMetrics",
    "MemoryPredictor",
    "RelevancyConfig",
    "RelevancyScorer",
    "TextEncoder",
    "Vocabulary",
    "cluster_dbscan",
    "cluster_voxels",
    "decode_gaussian_features",
    "ground",
    "ground_points",
    "grounding_metrics",
    "mask_iou",
    "otsu_mask",
    "relevancy_closed",
    "relevancy_open",
]
