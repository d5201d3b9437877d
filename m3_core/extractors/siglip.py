"""SigLIP dense features (transformers): the attention-pooling head applied to every patch.

SigLIP's image embedding is ``head(tokens)``: a learned probe attends over all patch tokens,
then LayerNorm + MLP with a residual. M3 applies the head to each patch token *alone*: with a
single key the softmax weight is 1, so the attention reduces to ``out_proj(W_v t + b_v)``, and
the result (+ MLP residual) is in the same space as SigLIP's text embeddings. SigLIP has no
class token; positional embeddings are interpolated by transformers to the aspect-kept grid.

Weights: a transformers SigLIP folder (``save_pretrained`` output; ``--weights DIR``),
``$M3_WEIGHTS_DIR/siglip``, or the HF cache of ``repo`` (default
"google/siglip-base-patch16-224"; the paper used "google/siglip-so400m-patch14-384"). The
real SigLIP tokenizer needs the ``sentencepiece`` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from m3_core.errors import M3Error, MissingWeightsError
from m3_core.extractors.base import CPU, HALF_MEAN, HALF_STD, FeatureExtractor, Preprocess
from m3_core.extractors.weights import build_hf_extractor, hf_image_stats

DEFAULT_REPO = "google/siglip-base-patch16-224"
HOW = "SigLIP needs a transformers SigLIP folder (config.json + weights + tokenizer)"


def build_siglip(
    *,
    weights: str | Path | None = None,
    device: torch.device = CPU,
    repo: str = DEFAULT_REPO,
    short_side: int | None = None,
    max_side: int = 1344,
    stride: int | None = None,
) -> SiglipExtractor:
    """Registry builder for "siglip"."""
    return build_hf_extractor(
        SiglipExtractor,
        "siglip",
        HOW,
        weights=weights,
        device=device,
        repo=repo,
        short_side=short_side,
        max_side=max_side,
        stride=stride,
    )


def head_per_token(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SigLIP pooling head on every token alone: x [B, N, W] -> [B, N, W].

    h = out_proj(x W_v^T + b_v); return h + mlp(layernorm(h)). Equal to
    ``head(x.reshape(B * N, 1, W))`` (the probe attends to one key), without the B*N loop.
    """
    attn = head.attention
    width = x.shape[-1]
    b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    v = F.linear(x, attn.in_proj_weight[2 * width :], b_v)
    h = attn.out_proj(v)
    return h + head.mlp(head.layernorm(h))


class SiglipExtractor(FeatureExtractor):
    """transformers ``SiglipModel``: per-patch pooled features + the SigLIP text tower."""

    name = "siglip"
    has_text = True

    def __init__(
        self, folder: Path, *, device: torch.device, short_side: int | None, max_side: int
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise MissingWeightsError(f"siglip: cannot load {folder}: {e}") from e
        if not hasattr(model, "vision_model") or not hasattr(model, "text_model"):
            raise M3Error(f"siglip: {folder} is not a SigLIP image-text model")
        head = getattr(model.vision_model, "head", None)
        if head is None:
            raise M3Error(f"siglip: {folder} has no attention-pooling head (vision_use_head)")
        self.model = model.eval().to(device)
        self.head = head
        self.device = device
        self.source = str(folder)
        vcfg = model.config.vision_config
        self.stride = int(vcfg.patch_size)
        self.dim = int(vcfg.hidden_size)
        mean, std = hf_image_stats(folder, HALF_MEAN, HALF_STD)
        self.preprocess = Preprocess(
            mean, std, short_side or int(vcfg.image_size), self.stride, self.stride, max_side
        )
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self._tokenizer: Any = None

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.vision_model(pixel_values=x, interpolate_pos_encoding=True)
        tokens = out.last_hidden_state  # [B, h*w, W] after post_layernorm (no class token)
        feats = head_per_token(self.head, tokens)
        b, h, w = x.shape[0], x.shape[2] // self.stride, x.shape[3] // self.stride
        return feats.transpose(1, 2).reshape(b, self.dim, h, w)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)
            except ImportError as e:
                raise M3Error(f"siglip: its tokenizer needs an extra package: {e}") from e
            except (OSError, ValueError) as e:
                raise MissingWeightsError(f"siglip: no tokenizer in {self.source}: {e}") from e
        return self._tokenizer

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        # SigLIP was trained on max-length padded text; its pooled token is the last one.
        enc = self.tokenizer(
            [t.lower() for t in texts],
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        out = self.model.get_text_features(input_ids=enc["input_ids"].to(self.device))
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # [K, D]

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "backend": "transformers", "source": self.source}
