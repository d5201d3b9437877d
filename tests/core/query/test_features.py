"""Per-Gaussian decoded features: equal to GMA per Gaussian; the cache follows the memory."""

from __future__ import annotations

import torch

from m3_core.memory import gma_decode_reference
from m3_core.query.features import GaussianFeatures, decode_gaussian_features

from .conftest import build_memory, scene_blobs


def random_memory():
    mem = build_memory(scene_blobs())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mem.gaussians["queries"].copy_(torch.randn(mem.num_gaussians, 16, generator=g))
        mem.projections["labels"].copy_(torch.randn(16, 16, generator=g))
    return mem


def reference(mem):
    q = mem.gaussians["queries"].detach()[:, mem.layout.slice("labels")]
    out = gma_decode_reference(
        q, mem.projections["labels"].detach(), mem.banks["labels"], mem.config.gma_temperature
    )
    return out / out.norm(dim=-1, keepdim=True)


def test_decoded_features_equal_gma_reference_per_gaussian():
    mem = random_memory()
    got = decode_gaussian_features(mem, "labels", chunk=100)  # several chunks
    torch.testing.assert_close(got, reference(mem), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(mem.num_gaussians))


def test_cache_hits_until_the_memory_changes():
    mem = random_memory()
    cache = GaussianFeatures(mem)
    a = cache.get("labels")
    assert cache.get("labels") is a and cache.decode_count == 1 and cache.is_cached("labels")

    with torch.no_grad():  # an optimizer-style in-place step on the queries
        mem.gaussians["queries"].mul_(-1.0).add_(0.3)
    assert not cache.is_cached("labels")
    b = cache.get("labels")
    assert cache.decode_count == 2
    torch.testing.assert_close(b, reference(mem), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a, b)

    with torch.no_grad():  # the projection changes (train_projection)
        mem.projections["labels"].mul_(2.0).add_(0.1)
    torch.testing.assert_close(cache.get("labels"), reference(mem), rtol=1e-5, atol=1e-6)
    assert cache.decode_count == 3

    # densification replaces the parameter with one of another length
    keep = mem.gaussians["queries"].detach()[:100].clone()
    for k in list(mem.gaussians.keys()):
        mem.gaussians[k] = torch.nn.Parameter(mem.gaussians[k].detach()[:100].clone())
    c = cache.get("labels")
    assert c.shape == (100, 16) and cache.decode_count == 4
    torch.testing.assert_close(mem.gaussians["queries"].detach(), keep)
    torch.testing.assert_close(c, reference(mem), rtol=1e-5, atol=1e-6)

    mem.banks["labels"] = mem.banks["labels"].flip(0).clone()  # a new PSC bank
    torch.testing.assert_close(cache.get("labels"), reference(mem), rtol=1e-5, atol=1e-6)
    assert cache.decode_count == 5

    cache.invalidate()
    cache.get("labels")
    assert cache.decode_count == 6


def test_empty_memory_decodes_to_empty_features():
    mem = build_memory(scene_blobs())
    for k in list(mem.gaussians.keys()):
        mem.gaussians[k] = torch.nn.Parameter(mem.gaussians[k].detach()[:0].clone())
    assert GaussianFeatures(mem).get("labels").shape == (0, 16)
