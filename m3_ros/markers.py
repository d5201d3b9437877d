"""rviz markers for grounded objects: a translucent box and a text label per object."""

from __future__ import annotations

import numpy as np
import torch
from visualization_msgs.msg import Marker, MarkerArray

PALETTE = [(0.95, 0.3, 0.2), (0.2, 0.7, 0.95), (0.3, 0.85, 0.35), (0.95, 0.8, 0.2)]


def grounded_markers(objects, frame_id: str, stamp, ns: str = "m3_grounding") -> MarkerArray:
    """DELETEALL, then for object k: CUBE (id 2k) and TEXT_VIEW_FACING (id 2k+1)."""
    out = MarkerArray()
    clear = Marker(action=Marker.DELETEALL, ns=ns)
    clear.header.frame_id = frame_id
    out.markers.append(clear)
    for k, obj in enumerate(objects):
        lo, hi = np.asarray(obj.bbox_min, float), np.asarray(obj.bbox_max, float)
        r, g, b = PALETTE[k % len(PALETTE)]
        box = Marker(ns=ns, id=2 * k, type=Marker.CUBE, action=Marker.ADD)
        box.header.frame_id, box.header.stamp = frame_id, stamp
        box.pose.position.x, box.pose.position.y, box.pose.position.z = (lo + hi) / 2
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = np.maximum(hi - lo, 0.02)
        box.color.r, box.color.g, box.color.b, box.color.a = r, g, b, 0.35
        text = Marker(ns=ns, id=2 * k + 1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header.frame_id, text.header.stamp = frame_id, stamp
        text.pose.position.x, text.pose.position.y = (lo[:2] + hi[:2]) / 2
        text.pose.position.z = hi[2] + 0.15
        text.pose.orientation.w = 1.0
        text.scale.z = 0.15
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = f"{obj.label} {obj.score:.2f}"
        out.markers.extend([box, text])
    return out


def object_scores(objects, predictor) -> torch.Tensor:  # [N]
    """Per-Gaussian values for the relevancy-coloured cloud: each grounded object's score on
    its own Gaussians, 0 elsewhere (from the answer itself: no second relevancy pass)."""
    means = predictor.memory.gaussians["means"]
    out = torch.zeros(means.shape[0], device=means.device)
    for obj in reversed(objects):  # the best object wins where two overlap
        idx = torch.as_tensor(np.asarray(getattr(obj, "indices", [])), dtype=torch.long)
        out[idx.to(means.device)] = float(obj.score)
    return out
