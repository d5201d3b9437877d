"""Features missing at training time are extracted from the images as recorded, not at the
training size (a small ``max_image_size`` must not starve the foundation model)."""

from __future__ import annotations

import numpy as np
import torch

from m3_core.data import FeatureStore, load_dataset, make_synthetic_scene
from m3_core.extractors import FeatureExtractor, Preprocess, register, unregister
from m3_core.extractors.base import CPU
from m3_core.train import FeatureSpec, TrainConfig
from m3_core.train.pipeline import ensure_features


class Pool(FeatureExtractor):
    """Features = 4x4 average pool of the input resized to a short side of 72 pixels."""

    name, dim, stride, has_text = "pool", 3, 4, False

    def __init__(self, *, weights=None, device=CPU):
        super().__init__()
        self.device = device
        self.preprocess = Preprocess((0.5,) * 3, (0.25,) * 3, 72, 4, 4)

    def _encode(self, x):  # [B, 3, H, W]
        return torch.nn.functional.avg_pool2d(x, self.stride)


def encode(dataset, i: int) -> torch.Tensor:  # [h, w, 3]
    return Pool().encode_image(dataset.load_image(i).permute(2, 0, 1)[None])[0].permute(1, 2, 0)


def test_missing_features_are_extracted_at_the_recorded_size(tmp_path):
    make_synthetic_scene(tmp_path / "scene", num_frames=4, width=96, height=72)
    small = load_dataset(tmp_path / "scene", max_size=(48, 36))  # the training size
    assert (small.frames[0].camera.width, small.frames[0].camera.height) == (48, 36)
    recorded = load_dataset(tmp_path / "scene")
    cfg = TrainConfig(features=[FeatureSpec("pool")], device="cpu")
    register("pool", Pool)
    try:
        ensure_features(small, cfg)
    finally:
        unregister("pool")
    store = FeatureStore(small.root, "pool")
    for i, frame in enumerate(small.frames):
        got = torch.from_numpy(np.load(store.dir / f"{frame.name}.npy")).float()
        # the map of the 96x72 image (float16 on disk), not of the 48x36 one upsampled
        torch.testing.assert_close(got, encode(recorded, i), atol=2e-3, rtol=2e-3)
        assert (got - encode(small, i)).abs().max() > 0.05
