"""The paper's 2D grounding metrics: Otsu-thresholded relevancy heatmaps vs ground-truth masks.

For each (heatmap, GT mask) pair the heatmap is thresholded with Otsu's method
(``skimage.filters.threshold_otsu``: pixels strictly above the threshold are foreground), and
the mask IoU with the GT is taken. Over a set of pairs:

- mIoU: mean of the per-pair IoUs;
- cIoU: cumulative IoU, sum of intersections / sum of unions (large objects weigh more);
- P@IoU0.5 / P@IoU0.6: fraction of pairs with IoU >= 0.5 / >= 0.6.

All values are fractions in [0, 1] (the paper prints percentages). A constant heatmap has no
foreground (Otsu cannot split it), so it scores IoU 0 unless the GT mask is empty too; a pair
whose predicted and GT masks are both empty counts as IoU 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from m3_core.errors import InvalidInputError


@dataclass(frozen=True)
class GroundingMetrics:
    miou: float
    ciou: float
    p50: float  # P@IoU0.5
    p60: float  # P@IoU0.6
    ious: tuple[float, ...]  # per pair, in input order

    def as_percent(self) -> dict[str, float]:
        """The paper's table row: mIoU, cIoU, P@0.5, P@0.6 in percent."""
        return {
            "mIoU": 100 * self.miou,
            "cIoU": 100 * self.ciou,
            "P@0.5": 100 * self.p50,
            "P@0.6": 100 * self.p60,
        }


def _as_2d(a, what: str) -> np.ndarray:
    arr = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
    if arr.ndim != 2 or arr.size == 0:
        raise InvalidInputError(f"{what} must be a non-empty [H, W] array, got {arr.shape}")
    return arr


def otsu_mask(heatmap) -> np.ndarray:
    """[H, W] relevancy heatmap -> bool mask [H, W] of the pixels above Otsu's threshold."""
    from skimage.filters import threshold_otsu

    h = _as_2d(heatmap, "heatmap").astype(np.float64)
    if not np.isfinite(h).all():
        raise InvalidInputError("heatmap contains NaN or infinite values")
    if float(h.max()) == float(h.min()):
        return np.zeros(h.shape, dtype=bool)
    return h > threshold_otsu(h)


def mask_iou(pred, gt) -> tuple[float, int, int]:
    """IoU of two bool masks [H, W] -> (iou, intersection, union); both empty -> IoU 1."""
    p, g = _as_2d(pred, "predicted mask").astype(bool), _as_2d(gt, "GT mask").astype(bool)
    if p.shape != g.shape:
        raise InvalidInputError(f"mask shapes differ: {p.shape} vs {g.shape}")
    inter, union = int(np.logical_and(p, g).sum()), int(np.logical_or(p, g).sum())
    return (1.0 if union == 0 else inter / union), inter, union


def grounding_metrics(heatmaps: Sequence, gt_masks: Sequence) -> GroundingMetrics:
    """mIoU, cIoU, P@0.5, P@0.6 of Otsu masks of ``heatmaps`` against ``gt_masks``."""
    if len(heatmaps) != len(gt_masks):
        raise InvalidInputError(f"{len(heatmaps)} heatmaps but {len(gt_masks)} GT masks")
    if not heatmaps:
        raise InvalidInputError("no heatmaps to evaluate")
    ious, inter_sum, union_sum = [], 0, 0
    for h, g in zip(heatmaps, gt_masks):
        iou, inter, union = mask_iou(otsu_mask(h), g)
        ious.append(iou)
        inter_sum += inter
        union_sum += union
    arr = np.asarray(ious)
    return GroundingMetrics(
        miou=float(arr.mean()),
        ciou=1.0 if union_sum == 0 else inter_sum / union_sum,
        p50=float((arr >= 0.5).mean()),
        p60=float((arr >= 0.6).mean()),
        ious=tuple(float(v) for v in arr),
    )
