"""CLIP dense features, MaskCLIP style, from open_clip or transformers weights on local disk.

Dense path (Zhou et al., MaskCLIP; what M3 distils): run the ViT up to its last block, then on
every patch token apply only the last block's *value* path (ln_1 -> value projection ->
out_proj [-> layer scale]), no attention mixing, no residual, no MLP; then ln_post and the
visual projection. The result lives in CLIP's joint image-text space, so a text embedding
scores every patch by cosine. Positional embeddings are interpolated (bicubic) to the grid
of the aspect-kept input, so non-square frames need no crop.

Weights (never downloaded), see ``weights.py`` for the search order:
    * an open_clip checkpoint file (``--weights ViT-B-16.pt``; architecture ``arch``, default
      "ViT-B-16", and pretrained ``tag`` (default "openai": QuickGELU + OpenAI mean/std));
    * an open_clip folder with ``open_clip_config.json`` + weights (``local-dir:``);
    * a transformers CLIP folder (``config.json`` with ``model_type`` "clip");
    * the HF hub cache of open_clip's (arch, tag) entry, read offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from m3_core.errors import InvalidInputError, M3Error, MissingWeightsError
from m3_core.extractors.base import (
    CPU,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    FeatureExtractor,
    Preprocess,
)
from m3_core.extractors.weights import (
    hf_cached_snapshot,
    hf_image_stats,
    local_candidates,
    missing_weights,
    set_offline,
)

HOW = (
    "CLIP accepts an open_clip checkpoint file (with --opt arch=ViT-B-16 --opt tag=openai), "
    "an open_clip folder (open_clip_config.json + weights) or a transformers CLIP folder"
)


def build_clip(
    *,
    weights: str | Path | None = None,
    device: torch.device = CPU,
    arch: str = "ViT-B-16",
    tag: str = "openai",
    short_side: int | None = None,
    max_side: int = 1344,
    stride: int | None = None,
) -> FeatureExtractor:
    """Registry builder for "clip" (see module doc for the accepted weights)."""
    set_offline()
    path, looked = local_candidates("clip", weights)
    if path is None:
        path = _open_clip_cache(arch, tag, looked)
    if path is None:
        raise missing_weights("clip", looked, HOW)
    kw: dict[str, Any] = dict(device=device, short_side=short_side, max_side=max_side)
    if path.is_dir() and (path / "open_clip_config.json").is_file():
        ext: FeatureExtractor = OpenClipExtractor.from_local_dir(path, **kw)
    elif path.is_dir() and (path / "config.json").is_file():
        ext = HFClipExtractor(path, **kw)
    elif path.is_file():
        ext = OpenClipExtractor.from_checkpoint(path, arch=arch, tag=tag, **kw)
    else:
        raise MissingWeightsError(f"{path} holds no CLIP weights; {HOW}")
    if stride is not None and stride != ext.stride:
        raise InvalidInputError(f"clip: stride is the patch size {ext.stride}, got {stride}")
    return ext


def _open_clip_cache(arch: str, tag: str, looked: list[str]) -> Path | None:
    """The checkpoint of open_clip's (arch, tag) in the local HF / ~/.cache/clip caches."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    hub = cfg.get("hf_hub", "").rstrip("/")
    if hub:
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            looked.append(f"HF cache {hub}/{fname}")
            snap = hf_cached_snapshot(hub, fname)
            if snap is not None:
                return snap / fname
    if cfg.get("url"):
        cand = Path("~/.cache/clip").expanduser() / Path(cfg["url"]).name
        looked.append(str(cand))
        if cand.is_file():
            return cand
    if not cfg:
        looked.append(f"open_clip has no pretrained entry ({arch}, {tag})")
    return None


def interpolate_pos_embed(pos: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]):
    """ViT positional embedding [1 + g0*g1, W] (class first) -> [1 + h*w, W] for grid (h, w)."""
    if tuple(grid) == tuple(size):
        return pos
    g0, g1 = grid
    width = pos.shape[-1]
    patch = pos[1:].reshape(1, g0, g1, width).permute(0, 3, 1, 2).float()  # [1, W, g0, g1]
    patch = F.interpolate(patch, size=size, mode="bicubic", align_corners=False)
    patch = patch.permute(0, 2, 3, 1).reshape(size[0] * size[1], width).to(pos.dtype)
    return torch.cat([pos[:1], patch], dim=0)


def value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP: the attention *value* path of an open_clip residual block, per token.

    x [B, L, W] (batch first) -> [B, L, W]: ls_1(ln_attn(out_proj(v))), v = ln_1(x) W_v^T + b_v.
    Equals the block's attention output when every token attends only to itself.
    """
    attn = block.attn
    width = x.shape[-1]
    if getattr(attn, "in_proj_weight", None) is not None:
        w_v = attn.in_proj_weight[2 * width :]  # [W, W]
        b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    elif getattr(attn, "v_proj_weight", None) is not None:
        w_v, b_v = attn.v_proj_weight, attn.in_proj_bias[2 * width :]
    else:
        raise M3Error("clip: unsupported attention module (no value projection found)")
    if getattr(attn, "head_scale", None) is not None:
        raise M3Error("clip: models with per-head attention scaling are not supported")
    v = F.linear(block.ln_1(x), w_v, b_v)
    v = getattr(attn, "ln_inner", nn.Identity())(v)
    out = attn.out_proj(v)
    out = getattr(block, "ln_attn", nn.Identity())(out)
    return block.ls_1(out)


class OpenClipExtractor(FeatureExtractor):
    """open_clip ViT with MaskCLIP dense features and the CLIP text tower."""

    name = "clip"
    has_text = True

    def __init__(self, model: nn.Module, tokenizer: Any, *, device: torch.device,
                 short_side: int | None, max_side: int, source: str) -> None:  # fmt: skip
        super().__init__()
        import open_clip

        visual = model.visual
        for attr in ("conv1", "class_embedding", "positional_embedding", "ln_post"):
            if not hasattr(visual, attr):
                raise M3Error(f"clip: only open_clip ViT image towers are supported ({source})")
        if getattr(visual, "attn_pool", None) is not None:
            raise M3Error(f"clip: attention-pooled (CoCa) towers are not supported ({source})")
        ph, pw = visual.patch_size
        if ph != pw:
            raise M3Error(f"clip: non-square patches {ph}x{pw} are not supported")
        self.model = model.eval().to(device)
        self.visual = visual
        self.tokenizer = tokenizer
        self.device = device
        self.stride = int(ph)
        self.dim = (
            int(visual.proj.shape[1]) if visual.proj is not None else visual.conv1.out_channels
        )
        self.source = source
        pp = open_clip.get_model_preprocess_cfg(model)
        self.preprocess = Preprocess(
            mean=tuple(pp.get("mean", OPENAI_CLIP_MEAN)),
            std=tuple(pp.get("std", OPENAI_CLIP_STD)),
            short_side=short_side or int(visual.image_size[0]),
            multiple=self.stride,
            stride=self.stride,
            max_side=max_side,
        )
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def from_local_dir(cls, folder: Path, **kw: Any) -> OpenClipExtractor:
        import open_clip

        name = f"local-dir:{folder}"
        try:
            model = open_clip.create_model(name, device=kw["device"], require_pretrained=True)
        except (RuntimeError, ValueError, FileNotFoundError) as e:
            raise MissingWeightsError(f"clip: cannot load open_clip folder {folder}: {e}") from e
        return cls(model, open_clip.get_tokenizer(name), source=str(folder), **kw)

    @classmethod
    def from_checkpoint(cls, file: Path, *, arch: str, tag: str, **kw: Any) -> OpenClipExtractor:
        import open_clip

        if arch not in open_clip.list_models():
            raise M3Error(f"clip: unknown open_clip arch {arch!r} (e.g. ViT-B-16, ViT-L-14-336)")
        cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
        pp = {k: cfg[k] for k in ("mean", "std") if k in cfg}
        try:
            model = open_clip.create_model(
                arch, pretrained=str(file), device=kw["device"], require_pretrained=True,
                force_quick_gelu=bool(cfg.get("quick_gelu", False)), force_preprocess_cfg=pp,
            )  # fmt: skip
        except (RuntimeError, ValueError, KeyError) as e:
            raise MissingWeightsError(
                f"clip: {file} is not an open_clip {arch} checkpoint: {e}"
            ) from e
        return cls(model, open_clip.get_tokenizer(arch), source=str(file), **kw)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:  # [1 + h*w, W]
        if (h, w) not in self._pos_cache:
            pe = self.visual.positional_embedding
            self._pos_cache[(h, w)] = interpolate_pos_embed(pe, self.visual.grid_size, (h, w))
        return self._pos_cache[(h, w)]

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        t = v.conv1(x.to(v.conv1.weight.dtype))  # [B, W, h, w]
        b, width, h, w = t.shape
        t = t.flatten(2).transpose(1, 2)  # [B, h*w, W]
        cls = v.class_embedding.to(t.dtype).view(1, 1, width).expand(b, 1, width)
        t = torch.cat([cls, t], dim=1) + self._pos_embed(h, w).to(t.dtype)  # [B, 1+h*w, W]
        t = v.ln_pre(t)
        blocks = v.transformer.resblocks
        batch_first = getattr(v.transformer, "batch_first", True)
        t = t if batch_first else t.transpose(0, 1)
        for blk in blocks[:-1]:
            t = blk(t)
        t = t if batch_first else t.transpose(0, 1)
        t = value_path(blocks[-1], t)[:, 1:]  # [B, h*w, W] patch tokens only
        t = v.ln_post(t)
        if v.proj is not None:
            t = t @ v.proj  # [B, h*w, D]
        return t.transpose(1, 2).reshape(b, self.dim, h, w)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), 256):
            tokens = self.tokenizer(texts[i : i + 256]).to(self.device)
            out.append(self.model.encode_text(tokens))
        return torch.cat(out)  # [K, D]

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "backend": "open_clip", "source": self.source}


class HFClipExtractor(FeatureExtractor):
    """transformers ``CLIPModel`` with the same MaskCLIP dense path."""

    name = "clip"
    has_text = True

    def __init__(self, folder: Path, *, device: torch.device, short_side: int | None,
                 max_side: int) -> None:  # fmt: skip
        super().__init__()
        from transformers import CLIPModel

        try:
            model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise MissingWeightsError(
                f"clip: cannot load transformers CLIP from {folder}: {e}"
            ) from e
        self.model = model.eval().to(device)
        self.device = device
        self.source = str(folder)
        vcfg = model.config.vision_config
        self.stride = int(vcfg.patch_size)
        self.dim = int(model.config.projection_dim)
        mean, std = hf_image_stats(folder, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        self.preprocess = Preprocess(mean, std, short_side or int(vcfg.image_size),
                                     self.stride, self.stride, max_side)  # fmt: skip
        self.tokenizer = _clip_tokenizer(folder, model.config.text_config.max_position_embeddings)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        vm = self.model.vision_model
        last = vm.encoder.layers[-1]
        seen: list[torch.Tensor] = []

        def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen.append(args[0] if args else kwargs["hidden_states"])

        handle = last.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            vm(pixel_values=x, interpolate_pos_encoding=True)
        finally:
            handle.remove()
        t = seen[-1]  # [B, 1+h*w, W] input of the last layer
        v = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(t)))[:, 1:]
        feats = self.model.visual_projection(vm.post_layernorm(v))  # [B, h*w, D]
        b, h, w = x.shape[0], x.shape[2] // self.stride, x.shape[3] // self.stride
        return feats.transpose(1, 2).reshape(b, self.dim, h, w)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(texts)
        out = self.model.get_text_features(input_ids=ids.to(self.device),
                                           attention_mask=mask.to(self.device))  # fmt: skip
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # [K, D]

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "backend": "transformers", "source": self.source}


def _clip_tokenizer(folder: Path, context_length: int):
    """texts -> (input_ids [K, L], attention_mask [K, L]): the folder's tokenizer if it has
    one, else open_clip's bundled CLIP BPE (the same vocabulary; works offline)."""
    if any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

        def hf(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            enc = tok(texts, padding=True, truncation=True, max_length=context_length,
                      return_tensors="pt")  # fmt: skip
            return enc["input_ids"], enc["attention_mask"]

        return hf
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer(context_length=context_length)

    def bpe(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = simple(texts)  # [K, L], zero padded, ends with the EOT id (the largest id)
        return ids, (ids != 0).long()

    return bpe
