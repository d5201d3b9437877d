"""CLIP: MaskCLIP dense features from tiny open_clip / transformers models saved to disk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from m3_core.errors import M3Error, MissingWeightsError
from m3_core.extractors import create_extractor
from m3_core.extractors.clip import interpolate_pos_embed, value_path
from tests.core.extractors.conftest import OPEN_CLIP_MEAN, OPEN_CLIP_STD, argmax2d, paste_response


@pytest.fixture(scope="module")
def clip_oc(open_clip_dir):
    return create_extractor("clip", weights=f"local-dir:{open_clip_dir}")


def _ln(x, ln):
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def maskclip_reference(visual, x: torch.Tensor) -> torch.Tensor:
    """Hand-written MaskCLIP on a normalised input at the model's native size: [B, D, h, w]."""
    p = visual.patch_size[0]
    b, _, hh, ww = x.shape
    h, w = hh // p, ww // p
    patches = x.unfold(2, p, p).unfold(3, p, p)  # [B, 3, h, w, p, p]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, h * w, -1)
    tok = patches @ visual.conv1.weight.reshape(visual.conv1.out_channels, -1).T  # [B, hw, W]
    cls = visual.class_embedding.expand(b, 1, -1)
    t = _ln(torch.cat([cls, tok], 1) + visual.positional_embedding, visual.ln_pre)
    blocks = visual.transformer.resblocks
    for blk in blocks[:-1]:
        t = blk(t)
    last = blocks[-1]
    width = t.shape[-1]
    w_v = last.attn.in_proj_weight[2 * width :]
    b_v = last.attn.in_proj_bias[2 * width :]
    v = _ln(t, last.ln_1) @ w_v.T + b_v
    v = v @ last.attn.out_proj.weight.T + last.attn.out_proj.bias
    f = _ln(v[:, 1:], visual.ln_post) @ visual.proj  # [B, hw, D]
    return f.transpose(1, 2).reshape(b, -1, h, w)


def test_open_clip_folder_loads_with_its_preprocessing(clip_oc):
    assert clip_oc.dim == 32 and clip_oc.stride == 8 and clip_oc.has_text
    assert clip_oc.preprocess.mean == pytest.approx(OPEN_CLIP_MEAN)
    assert clip_oc.preprocess.std == pytest.approx(OPEN_CLIP_STD)
    assert clip_oc.preprocess.short_side == 32
    feats = clip_oc.encode_image(torch.rand(2, 3, 48, 64))  # non-square frame
    assert feats.shape == (2, 32, 4, 5) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()


def test_maskclip_dense_path_matches_hand_written_reference(clip_oc):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)  # native size: no interpolation involved
    got = clip_oc.encode_image(images)
    with torch.no_grad():
        ref = maskclip_reference(clip_oc.visual, clip_oc.preprocess(images))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_tokens_before_last_block_match_open_clip(clip_oc):
    """Our embedding + blocks[:-1] equals open_clip's own forward_intermediates."""
    v = clip_oc.visual
    x = clip_oc.preprocess(torch.rand(1, 3, 32, 32))
    seen = []
    hook = v.transformer.resblocks[-1].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        with torch.no_grad():
            inter = v.forward_intermediates(x, indices=[0], stop_early=True, output_fmt="NLC")
            clip_oc._encode(x)
    finally:
        hook.remove()
    assert not seen  # our dense path never runs the last block's full forward
    with torch.no_grad():
        ours = v.ln_pre(
            torch.cat([v.class_embedding.view(1, 1, -1), v.conv1(x).flatten(2).transpose(1, 2)], 1)
            + v.positional_embedding
        )
        ours = v.transformer.resblocks[0](ours)
    torch.testing.assert_close(ours[:, 1:], inter["image_intermediates"][0], rtol=1e-5, atol=1e-5)


def test_value_path_is_attention_restricted_to_self(clip_oc):
    """With a diagonal attention mask every token attends to itself only: that IS the value
    path, so both must agree (independent of how value_path slices the weights)."""
    blk = clip_oc.visual.transformer.resblocks[-1]
    x = torch.randn(2, 7, 64)
    mask = torch.full((7, 7), float("-inf"))
    mask.fill_diagonal_(0.0)
    with torch.no_grad():
        ref = blk.ls_1(blk.attention(blk.ln_1(x), attn_mask=mask))
        got = value_path(blk, x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_pos_embed_interpolation_is_identity_at_native_size_and_smooth_elsewhere():
    g = torch.arange(16.0).reshape(4, 4)
    pos = torch.cat([torch.full((1, 2), -1.0), torch.stack([g, 2 * g], -1).reshape(16, 2)])
    assert interpolate_pos_embed(pos, (4, 4), (4, 4)) is pos
    out = interpolate_pos_embed(pos, (4, 4), (4, 8))
    assert out.shape == (33, 2) and torch.equal(out[0], pos[0])
    grid = out[1:, 0].reshape(4, 8)
    ref = F.interpolate(g[None, None], size=(4, 8), mode="bicubic", align_corners=False)[0, 0]
    torch.testing.assert_close(grid, ref)


def test_text_and_image_share_one_space(clip_oc):
    emb = clip_oc.encode_text(["a photo of a cat", "a red chair"])
    assert emb.shape == (2, clip_oc.dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(emb[0], emb[1])
    feats = clip_oc.encode_image(torch.rand(1, 3, 40, 56))  # [1, D, h, w]
    cos = torch.einsum("kd,dhw->khw", emb, F.normalize(feats[0], dim=0))
    assert cos.shape == (2, 4, 6) and cos.abs().max() <= 1 + 1e-5


def test_dense_features_follow_a_pasted_patch(clip_oc):
    assert clip_oc.grid_size(60, 84) == (4, 6)  # 32 x 44.8 -> 32 x 48 pixels
    for cell in [(0, 0), (2, 4), (3, 1)]:
        resp = paste_response(clip_oc, 60, 84, cell)
        assert resp.shape == (4, 6)
        assert argmax2d(resp) == cell


def test_tokenizer_works_offline():
    import open_clip

    tok = open_clip.get_tokenizer("ViT-B-16")
    ids = tok(["a photo of a cat", "a dog"])
    assert ids.shape == (2, 77)
    assert (ids[:, 0] == 49406).all() and ((ids == 49407).sum(dim=1) == 1).all()
    assert not torch.equal(ids[0], ids[1])


def test_checkpoint_file_with_arch(open_clip_checkpoint):
    path, arch = open_clip_checkpoint
    ext = create_extractor("clip", weights=path, arch=arch, tag="none")
    assert ext.source == str(path) and ext.dim == 32
    state = torch.load(path, weights_only=True)
    torch.testing.assert_close(ext.visual.proj, state["visual.proj"])  # the file's weights
    with pytest.raises(M3Error, match="unknown open_clip arch"):
        create_extractor("clip", weights=path, arch="No-Such-Arch")


def test_folder_without_weights_is_refused(tmp_path, open_clip_dir):
    (tmp_path / "open_clip_config.json").write_text(
        (open_clip_dir / "open_clip_config.json").read_text()
    )
    with pytest.raises(MissingWeightsError):
        create_extractor("clip", weights=f"local-dir:{tmp_path}")


def test_transformers_clip_folder(hf_clip_dir):
    from transformers import CLIPModel

    ext = create_extractor("clip", weights=hf_clip_dir)
    assert ext.dim == 32 and ext.stride == 8
    images = torch.rand(2, 3, 32, 32)
    got = ext.encode_image(images)
    ref_model = CLIPModel.from_pretrained(hf_clip_dir).eval()
    vm = ref_model.vision_model
    with torch.no_grad():
        hs = vm(pixel_values=ext.preprocess(images), output_hidden_states=True).hidden_states
        last = vm.encoder.layers[-1]
        a = last.self_attn
        v = F.linear(_ln(hs[-2], last.layer_norm1), a.v_proj.weight, a.v_proj.bias)
        v = F.linear(v, a.out_proj.weight, a.out_proj.bias)[:, 1:]
        ref = _ln(v, vm.post_layernorm) @ ref_model.visual_projection.weight.T  # [B, 16, D]
    torch.testing.assert_close(got, ref.transpose(1, 2).reshape(2, 32, 4, 4), rtol=1e-4, atol=1e-5)
    assert got.shape == (2, 32, 4, 4)
    assert ext.encode_image(torch.rand(1, 3, 48, 64)).shape == (1, 32, 4, 5)
    emb = ext.encode_text(["a photo of a cat", "a dog"])
    assert emb.shape == (2, 32)
    with torch.no_grad():
        import open_clip

        ids = open_clip.get_tokenizer("ViT-B-16")(["a photo of a cat"])
        ref_t = ref_model.get_text_features(input_ids=ids, attention_mask=(ids != 0).long())
        ref_t = ref_t if isinstance(ref_t, torch.Tensor) else ref_t.pooler_output
    torch.testing.assert_close(emb[0], F.normalize(ref_t[0], dim=0), rtol=1e-4, atol=1e-5)
    resp = paste_response(ext, 48, 64, (3, 2))
    assert argmax2d(resp) == (3, 2)
