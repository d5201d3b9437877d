"""DINOv2 dense features (transformers): the final patch tokens, no text tower.

``last_hidden_state`` (after the final LayerNorm) without the class token (and register
tokens for the ``dinov2_with_registers`` variant), reshaped to the patch grid [B, D, h, w].
transformers interpolates the positional embeddings to the aspect-kept input, so there is no
centre crop (the paper's release cropped, misaligning features and frame).

Weights: a transformers DINOv2 folder (``--weights DIR``), ``$M3_WEIGHTS_DIR/dinov2``, or the
HF cache of ``repo`` (default "facebook/dinov2-base"; the paper used dinov2-giant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from m3_core.errors import M3Error, MissingWeightsError
from m3_core.extractors.base import CPU, IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, Preprocess
from m3_core.extractors.weights import build_hf_extractor, hf_image_stats

DEFAULT_REPO = "facebook/dinov2-base"
HOW = "DINOv2 needs a transformers Dinov2 folder (config.json + weights)"


def build_dinov2(
    *,
    weights: str | Path | None = None,
    device: torch.device = CPU,
    repo: str = DEFAULT_REPO,
    short_side: int = 224,
    max_side: int = 1344,
    stride: int | None = None,
) -> Dinov2Extractor:
    """Registry builder for "dinov2"."""
    return build_hf_extractor(
        Dinov2Extractor,
        "dinov2",
        HOW,
        weights=weights,
        device=device,
        repo=repo,
        short_side=short_side,
        max_side=max_side,
        stride=stride,
    )


class Dinov2Extractor(FeatureExtractor):
    """transformers ``Dinov2Model`` (or with registers) patch tokens."""

    name = "dinov2"
    has_text = False

    def __init__(
        self, folder: Path, *, device: torch.device, short_side: int, max_side: int
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise MissingWeightsError(f"dinov2: cannot load {folder}: {e}") from e
        mtype = getattr(model.config, "model_type", "")
        if mtype not in ("dinov2", "dinov2_with_registers"):
            raise M3Error(f"dinov2: {folder} holds a {mtype!r} model, not DINOv2")
        self.model = model.eval().to(device)
        self.device = device
        self.source = str(folder)
        self.stride = int(model.config.patch_size)
        self.dim = int(model.config.hidden_size)
        self.num_prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)
        mean, std = hf_image_stats(folder, IMAGENET_MEAN, IMAGENET_STD)
        self.preprocess = Preprocess(mean, std, short_side, self.stride, self.stride, max_side)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model(pixel_values=x).last_hidden_state[:, self.num_prefix :]  # [B, h*w, D]
        b, h, w = x.shape[0], x.shape[2] // self.stride, x.shape[3] // self.stride
        return tokens.transpose(1, 2).reshape(b, self.dim, h, w)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "backend": "transformers", "source": self.source}
