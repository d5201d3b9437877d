"""The precomputed feature store and bilinear sampling at normalised image coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from m3_core.data import FeatureStore, list_feature_names, sample_bilinear
from m3_core.errors import InvalidInputError


def test_store_round_trip_dim_and_vocabulary(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, "clip")
    assert not store.exists("a") and store.vocabulary() is None and store.stems() == []
    with pytest.raises(InvalidInputError, match="no feature maps"):
        _ = store.dim
    a16 = np.random.default_rng(0).normal(size=(3, 4, 6)).astype(np.float16)
    b64 = np.random.default_rng(1).normal(size=(5, 2, 6))  # any grid, float64 -> float32
    store.save("a", a16)
    store.save("b", torch.from_numpy(b64))
    assert np.load(store.path("a")).dtype == np.float16
    assert np.load(store.path("b")).dtype == np.float32
    again = FeatureStore(tmp_path, "clip")
    assert again.dim == 6 and again.stems() == ["a", "b"] and again.exists("a")
    torch.testing.assert_close(again.load("a"), torch.from_numpy(a16.astype(np.float32)))
    torch.testing.assert_close(again.load("b"), torch.from_numpy(b64).float())
    emb = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float32)
    again.save_vocabulary(["a red chair", "sofa"], emb)
    texts, e = FeatureStore(tmp_path, "clip").vocabulary()
    assert texts == ["a red chair", "sofa"]
    torch.testing.assert_close(e, torch.from_numpy(emb))
    again.save_meta({"model": "ViT-B-16", "dim": 6})
    assert again.meta()["model"] == "ViT-B-16"
    assert list_feature_names(tmp_path) == ["clip"]
    (tmp_path / "features" / "empty").mkdir()
    assert list_feature_names(tmp_path) == ["clip"]
    assert list_feature_names(tmp_path / "nothing") == []


def test_store_refuses_bad_maps_and_changes_nothing(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, "dino")
    store.save("a", np.zeros((2, 2, 4), np.float32))
    before = sorted(p.name for p in store.dir.iterdir())
    nan = np.zeros((2, 2, 4), np.float32)
    nan[0, 1, 2] = np.nan
    bad = [
        ("b", np.zeros((2, 2, 5), np.float32), "dim 5"),
        ("b", nan, "NaN"),
        ("b", np.zeros((2, 4), np.float32), r"\[h, w, D\]"),
        ("b", np.zeros((2, 2, 4), np.int32), "float"),
        ("../b", np.zeros((2, 2, 4), np.float32), "bad image stem"),
    ]
    for stem, arr, msg in bad:
        with pytest.raises(InvalidInputError, match=msg):
            store.save(stem, arr)
    with pytest.raises(InvalidInputError, match="embedding dim"):
        store.save_vocabulary(["x"], np.zeros((1, 3)))
    with pytest.raises(InvalidInputError, match="texts"):
        store.save_vocabulary(["x", "y"], np.zeros((1, 4)))
    assert sorted(p.name for p in store.dir.iterdir()) == before
    # maps written by someone else are validated on load
    np.save(store.dir / "c.npy", nan)
    with pytest.raises(InvalidInputError, match="NaN"):
        store.load("c")
    with pytest.raises(InvalidInputError, match="no 'dino' features"):
        store.load("zzz")
    with pytest.raises(InvalidInputError, match="bad feature name"):
        FeatureStore(tmp_path, "a/b")


def _grid_sample_ref(grid: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """[B, h, w, D], [B, P, 2] -> [B, P, D] with F.grid_sample (border, align_corners=False)."""
    out = F.grid_sample(
        grid.permute(0, 3, 1, 2),
        (2 * uv - 1)[:, :, None, :],
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )  # [B, D, P, 1]
    return out[..., 0].permute(0, 2, 1)


@pytest.mark.parametrize("batched", [False, True])
def test_sample_bilinear_matches_grid_sample_forward_and_backward(batched: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    b = 3 if batched else 1
    grid = torch.randn(b, 5, 7, 4, generator=gen, dtype=torch.float64)
    uv = torch.rand(b, 50, 2, generator=gen, dtype=torch.float64) * 1.2 - 0.1  # some outside
    g1, u1 = grid.clone().requires_grad_(), uv.clone().requires_grad_()
    g2, u2 = grid.clone().requires_grad_(), uv.clone().requires_grad_()
    out = sample_bilinear(g1, u1) if batched else sample_bilinear(g1[0], u1[0])[None]
    ref = _grid_sample_ref(g2, u2)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    w = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(g1.grad, g2.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(u1.grad, u2.grad, atol=1e-10, rtol=0)


def test_sample_bilinear_hand_computed_and_resolution_independent() -> None:
    grid = torch.tensor([[[0.0], [1.0]], [[2.0], [3.0]]])  # [2, 2, 1]: value = x + 2 y
    uv = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.5, 0.5], [0.5, 0.25], [0.0, 1.0]])
    got = sample_bilinear(grid, uv)[:, 0]
    # texel centres at 0.25 / 0.75; (0, 1) is clamped to the bottom-left centre
    torch.testing.assert_close(got, torch.tensor([0.0, 1.0, 1.5, 0.5, 2.0]))

    # a linear function of (u, v) stored at texel centres is reproduced exactly by bilinear
    # sampling at any grid resolution: low-res and full-res maps agree at the same uv
    def ramp(h: int, w: int) -> torch.Tensor:
        v, u = torch.meshgrid(
            (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij"
        )
        return torch.stack([3 * u - v, u + 2 * v], dim=-1)  # [h, w, 2]

    q = torch.rand(200, 2, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    lo, hi = sample_bilinear(ramp(6, 8), q), sample_bilinear(ramp(120, 160), q)
    torch.testing.assert_close(lo, hi, atol=1e-5, rtol=0)
    torch.testing.assert_close(lo, torch.stack([3 * q[:, 0] - q[:, 1], q[:, 0] + 2 * q[:, 1]], -1))
    with pytest.raises(InvalidInputError, match="sample_bilinear"):
        sample_bilinear(torch.zeros(2, 2, 1), torch.zeros(3, 3))
