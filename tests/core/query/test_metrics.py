"""2D grounding metrics against hand-computed IoUs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3_core.errors import InvalidInputError
from m3_core.query.metrics import grounding_metrics, mask_iou, otsu_mask


def rect(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def heat_of(mask, rng, lo=0.1, hi=0.9, levels=3):
    """A bimodal heatmap: ``hi`` or a bit below inside ``mask``, exactly ``lo`` outside.

    The background is kept constant: skimage's threshold is the centre of a histogram bin (256
    bins), so background pixels in the upper half of its last bin would count as foreground.
    """
    step = rng.integers(0, levels, mask.shape) * 0.01
    return np.where(mask, hi - step, lo)


def test_otsu_recovers_a_bimodal_mask():
    rng = np.random.default_rng(0)
    m = rect(20, 30, 5, 12, 3, 20)
    np.testing.assert_array_equal(otsu_mask(heat_of(m, rng)), m)
    np.testing.assert_array_equal(otsu_mask(np.where(m, 0.7, 0.2)), m)
    np.testing.assert_array_equal(otsu_mask(torch.from_numpy(heat_of(m, rng))), m)
    assert not otsu_mask(np.full((4, 4), 0.3)).any()  # constant: nothing to split


def test_mask_iou_hand_computed():
    a, b = rect(10, 10, 0, 4, 0, 5), rect(10, 10, 2, 6, 0, 5)  # 20 px each, 10 shared
    iou, inter, union = mask_iou(a, b)
    assert (inter, union) == (10, 30) and iou == pytest.approx(1 / 3)
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3)))[0] == 1.0


def test_grounding_metrics_hand_computed():
    rng = np.random.default_rng(1)
    h, w = 10, 10
    gts = [rect(h, w, 0, 4, 0, 5), rect(h, w, 0, 10, 0, 10), rect(h, w, 0, 2, 0, 2)]
    preds = [
        rect(h, w, 2, 6, 0, 5),  # IoU 10/30
        rect(h, w, 0, 6, 0, 10),  # IoU 60/100
        rect(h, w, 0, 2, 0, 2),  # IoU 1 (4/4)
    ]
    m = grounding_metrics([heat_of(p, rng) for p in preds], gts)
    np.testing.assert_allclose(m.ious, [1 / 3, 0.6, 1.0], rtol=1e-12)
    assert m.miou == pytest.approx((1 / 3 + 0.6 + 1.0) / 3)
    assert m.ciou == pytest.approx((10 + 60 + 4) / (30 + 100 + 4))
    assert m.p50 == pytest.approx(2 / 3) and m.p60 == pytest.approx(2 / 3)
    assert m.as_percent()["mIoU"] == pytest.approx(100 * m.miou)


def test_bad_input_is_refused():
    with pytest.raises(InvalidInputError):
        grounding_metrics([np.zeros((2, 2))], [])
    with pytest.raises(InvalidInputError):
        grounding_metrics([], [])
    with pytest.raises(InvalidInputError):
        mask_iou(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(InvalidInputError):
        otsu_mask(np.zeros(5))
    with pytest.raises(InvalidInputError):
        otsu_mask(np.array([[0.0, np.nan]]))
