"""The interface, the registry and the weight search, without any real model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from m3_core.errors import InvalidInputError, M3Error, MissingWeightsError, UnknownModelError
from m3_core.extractors import (
    FeatureExtractor,
    Preprocess,
    create_extractor,
    list_extractors,
    register,
    unregister,
)
from m3_core.extractors.base import CPU, validate_images


class Toy(FeatureExtractor):
    """Average-pools the input by ``stride``; text = a fixed vector per length, counted."""

    name, dim, stride, has_text = "toy", 3, 4, True

    def __init__(self, *, weights=None, device=CPU, has_text=True):
        super().__init__()
        self.device, self.has_text = device, has_text
        self.preprocess = Preprocess((0.5,) * 3, (0.25,) * 3, 8, 4, 4)
        self.calls: list[list[str]] = []

    def _encode(self, x):
        return torch.nn.functional.avg_pool2d(x, self.stride)

    def _encode_text(self, texts):
        self.calls.append(list(texts))
        return torch.tensor([[len(t), 1.0, 0.0] for t in texts])


def test_importing_the_package_imports_no_model_library():
    code = (
        "import sys, m3_core.extractors as e; e.list_extractors(); "
        "bad = [m for m in ('open_clip', 'transformers', 'torchvision', "
        "'efficientnet_lite_pytorch') if m in sys.modules]; print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_registry_lists_builtins_and_rejects_unknown_names():
    assert {"clip", "siglip", "dinov2", "effnet", "precomputed"} <= set(list_extractors())
    with pytest.raises(UnknownModelError, match="registered: .*clip.*dinov2.*effnet"):
        create_extractor("no-such-model")
    with pytest.raises(InvalidInputError):
        register("bad name!", Toy)
    with pytest.raises(InvalidInputError, match="unknown option"):
        create_extractor("effnet", colour="blue")


def test_register_custom_builder():
    register("toy", Toy, description="test")
    try:
        assert "toy" in list_extractors()
        ext = create_extractor("toy", device="cpu")
        assert isinstance(ext, Toy) and ext.device == torch.device("cpu")
    finally:
        unregister("toy")
    assert "toy" not in list_extractors()


def test_preprocess_keeps_aspect_and_normalises():
    pp = Preprocess((0.5, 0.4, 0.3), (0.5, 0.2, 0.1), short_side=32, multiple=8, stride=8)
    assert pp.target_size(480, 640) == (32, 40)  # 42.67 -> 40: within half a patch
    assert pp.target_size(640, 480) == (40, 32)
    assert pp.grid_size(480, 640) == (4, 5)
    assert pp.target_size(3, 3) == (32, 32)  # upscales small frames
    capped = Preprocess((0,) * 3, (1,) * 3, short_side=224, multiple=32, stride=16, max_side=256)
    assert capped.target_size(100, 1000) == (32, 256)
    assert capped.grid_size(100, 1000) == (2, 16)
    img = torch.full((2, 3, 48, 64), 0.7)
    out = pp(img)
    assert out.shape == (2, 3, 32, 40)
    expect = torch.tensor([(0.7 - 0.5) / 0.5, (0.7 - 0.4) / 0.2, (0.7 - 0.3) / 0.1])
    torch.testing.assert_close(out[0, :, 5, 7], expect, rtol=0, atol=1e-5)


def test_preprocess_does_not_crop():
    """A bright left column stays at the left edge after resizing (no centre crop)."""
    pp = Preprocess((0,) * 3, (1,) * 3, short_side=16, multiple=4, stride=4)
    img = torch.zeros(1, 3, 40, 120)
    img[..., :, :6] = 1.0  # left 5 % of the frame
    out = pp(img)[0, 0]  # [16, 48]
    cols = (out > 0.5).any(dim=0).nonzero().flatten()
    assert cols.min() == 0 and cols.max() <= 3


@pytest.mark.parametrize(
    "bad",
    [
        torch.rand(3, 8, 8),
        torch.rand(1, 4, 8, 8),
        torch.randint(0, 255, (1, 3, 8, 8)),
        torch.full((1, 3, 8, 8), float("nan")),
        torch.full((1, 3, 8, 8), 2.0),
    ],
)
def test_bad_images_are_refused(bad):
    with pytest.raises(InvalidInputError):
        validate_images(bad)


def test_encode_image_and_text_contract():
    ext = Toy()
    feats = ext.encode_image(torch.rand(2, 3, 30, 50))
    assert feats.shape == (2, 3, 2, 3) and feats.dtype == torch.float32
    emb = ext.encode_text(["ab", "abcd", "ab"])
    assert emb.shape == (3, 3)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(emb[0], emb[2])
    assert ext.calls == [["ab", "abcd"]]  # duplicates encoded once
    ext.encode_text(["abcd", "xyz"])
    assert ext.calls[-1] == ["xyz"]  # cached texts are not re-encoded
    for bad in ([], [""], ["  "], "a string", [3]):
        with pytest.raises(InvalidInputError):
            ext.encode_text(bad)
    with pytest.raises(M3Error, match="no text encoder"):
        Toy(has_text=False).encode_text(["cat"])


def test_device_auto_and_bad_device():
    ext = create_extractor("effnet", device="auto")
    assert ext.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidInputError):
        create_extractor("effnet", device="potato")


@pytest.mark.parametrize("name", ["clip", "siglip", "dinov2"])
def test_missing_weights_error_says_where_and_how(name, no_weights_anywhere):
    with pytest.raises(MissingWeightsError) as info:
        create_extractor(name)
    msg = str(info.value)
    assert f"model '{name}'" in msg
    assert str(no_weights_anywhere / name) in msg  # where it looked
    assert "--weights" in msg and "M3_WEIGHTS_DIR" in msg  # how to provide them
    assert "\n" not in msg


def test_explicit_weights_path_must_exist(tmp_path):
    with pytest.raises(MissingWeightsError, match="not found"):
        create_extractor("clip", weights=tmp_path / "nope.pt")
    with pytest.raises(MissingWeightsError, match="not an efficientnet-lite0"):
        bad = tmp_path / "bad.pth"
        bad.write_bytes(b"not a checkpoint")
        create_extractor("effnet", weights=bad)


def test_weights_dir_env_is_searched(dinov2_dir, monkeypatch, tmp_path):
    root = tmp_path / "weights"
    root.mkdir()
    (root / "dinov2").symlink_to(dinov2_dir, target_is_directory=True)
    monkeypatch.setenv("M3_WEIGHTS_DIR", str(root))
    ext = create_extractor("dinov2")
    assert ext.source == str(root / "dinov2")
