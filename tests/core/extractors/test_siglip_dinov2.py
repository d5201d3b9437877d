"""SigLIP (pooling head per patch) and DINOv2 (patch tokens) from tiny transformers folders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m3_core.errors import InvalidInputError, M3Error, MissingWeightsError
from m3_core.extractors import create_extractor
from m3_core.extractors.base import HALF_MEAN, IMAGENET_MEAN
from m3_core.extractors.siglip import head_per_token
from tests.core.extractors.conftest import argmax2d, paste_response


@pytest.fixture(scope="module")
def siglip(siglip_dir):
    return create_extractor("siglip", weights=siglip_dir)


@pytest.fixture(scope="module")
def dinov2(dinov2_dir):
    return create_extractor("dinov2", weights=dinov2_dir, short_side=32)


def test_siglip_head_per_token_equals_head_on_each_token_alone(siglip):
    """Fast path (one matmul per layer) vs slow twin (the real head, one token at a time)."""
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        fast = head_per_token(siglip.head, x)
        slow = torch.stack(
            [
                torch.stack([siglip.head(x[b, n].view(1, 1, 32))[0] for n in range(5)])
                for b in range(2)
            ]
        )
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_siglip_dense_features(siglip, siglip_dir):
    from transformers import SiglipModel

    assert siglip.dim == 32 and siglip.stride == 8 and siglip.preprocess.mean == HALF_MEAN
    images = torch.rand(2, 3, 40, 56)
    feats = siglip.encode_image(images)
    assert feats.shape == (2, 32, 4, 6) and feats.dtype == torch.float32
    ref_model = SiglipModel.from_pretrained(siglip_dir).eval()
    with torch.no_grad():
        x = siglip.preprocess(images)
        tokens = ref_model.vision_model(pixel_values=x, interpolate_pos_encoding=True)
        tokens = tokens.last_hidden_state  # [2, 24, 32]
        ref = torch.stack(
            [ref_model.vision_model.head(tokens[:, n : n + 1]) for n in range(24)], 2
        )
    torch.testing.assert_close(feats, ref.reshape(2, 32, 4, 6), rtol=1e-4, atol=1e-5)


def test_siglip_text_in_the_image_space(siglip, siglip_dir):
    from transformers import AutoTokenizer, SiglipModel

    emb = siglip.encode_text(["a photo of a cat", "a red chair"])
    assert emb.shape == (2, siglip.dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    tok = AutoTokenizer.from_pretrained(siglip_dir)
    ids = tok(["a photo of a cat"], padding="max_length", max_length=16, return_tensors="pt")
    ref_model = SiglipModel.from_pretrained(siglip_dir).eval()
    with torch.no_grad():
        ref = ref_model.get_text_features(input_ids=ids["input_ids"])
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    torch.testing.assert_close(emb[0], F.normalize(ref[0], dim=0), rtol=1e-4, atol=1e-5)


def test_siglip_features_follow_a_pasted_patch(siglip):
    for cell in [(0, 5), (3, 2)]:
        assert argmax2d(paste_response(siglip, 40, 56, cell)) == cell


def test_siglip_stride_is_the_patch_size(siglip_dir):
    with pytest.raises(InvalidInputError, match="patch size 8"):
        create_extractor("siglip", weights=siglip_dir, stride=16)


def test_dinov2_patch_tokens(dinov2, dinov2_dir):
    from transformers import Dinov2Model

    assert dinov2.dim == 32 and not dinov2.has_text and dinov2.preprocess.mean == IMAGENET_MEAN
    images = torch.rand(2, 3, 32, 48)
    feats = dinov2.encode_image(images)
    assert feats.shape == (2, 32, 4, 6)
    ref_model = Dinov2Model.from_pretrained(dinov2_dir).eval()
    with torch.no_grad():
        ref = ref_model(pixel_values=dinov2.preprocess(images)).last_hidden_state[:, 1:]
    torch.testing.assert_close(feats, ref.transpose(1, 2).reshape(2, 32, 4, 6))
    with pytest.raises(M3Error, match="no text encoder"):
        dinov2.encode_text(["a cat"])


def test_dinov2_features_follow_a_pasted_patch(dinov2):
    for cell in [(0, 0), (3, 4)]:
        assert argmax2d(paste_response(dinov2, 48, 72, cell)) == cell


def test_wrong_model_family_is_refused(siglip_dir, tmp_path):
    with pytest.raises(M3Error, match="not DINOv2"):
        create_extractor("dinov2", weights=siglip_dir)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises((MissingWeightsError, M3Error)):
        create_extractor("dinov2", weights=tmp_path)
