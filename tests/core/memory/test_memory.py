"""Memory: creation, validation, decoding, device moves."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from m3_core.errors import InvalidInputError, UnknownModelError
from m3_core.memory import Memory, gma_decode_reference

from .conftest import make_gaussians


def test_create_projections_seeded_normal(config, banks):
    m = Memory.create(config, make_gaussians(10, config.query_dim), banks, seed=7)
    g = torch.Generator().manual_seed(7)
    for spec in config.models:  # drawn in model order from one seeded generator
        expected = torch.randn(spec.query_channels, spec.dim, generator=g)
        assert torch.equal(m.projections[spec.name].detach(), expected)
        assert not m.projections[spec.name].requires_grad
    again = Memory.create(config, make_gaussians(10, config.query_dim), banks, seed=7)
    other = Memory.create(config, make_gaussians(10, config.query_dim), banks, seed=8)
    assert torch.equal(again.projections["clip"], m.projections["clip"])
    assert not torch.equal(other.projections["clip"], m.projections["clip"])
    assert isinstance(m.gaussians, torch.nn.ParameterDict)
    assert m.num_gaussians == 10 and m.layout.total == config.query_dim == 10
    assert "N=10" in repr(m)


def test_projection_statistics_are_standard_normal():
    from m3_core.config import MemoryConfig
    from m3_core.types import ModelSpec

    cfg = MemoryConfig(models=[ModelSpec("big", 256, 64)], sh_degree=0, train_projection=True)
    m = Memory.create(cfg, make_gaussians(3, 64, sh_degree=0), {"big": torch.randn(2, 256)})
    assert m.projections["big"].requires_grad
    w = m.projections["big"].detach()
    assert abs(float(w.mean())) < 0.02 and abs(float(w.std()) - 1.0) < 0.02


def test_decode_full_or_slice_matches_reference(memory):
    q = memory.gaussians["queries"]  # [N, Q]
    for spec in memory.config.models:
        name, sl = spec.name, memory.layout.slice(spec.name)
        out_full = memory.decode(name, q)
        out_slice = memory.decode(name, q[:, sl])
        ref = gma_decode_reference(q[:, sl], memory.projections[name], memory.banks[name], 0.05)
        torch.testing.assert_close(out_full, ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out_slice, out_full)
        assert out_full.shape == (memory.num_gaussians, spec.dim)


def test_decode_gradients_reach_queries_not_frozen_projection(memory):
    out = memory.decode("dino", memory.gaussians["queries"])
    out.square().sum().backward()
    grad = memory.gaussians["queries"].grad
    sl = memory.layout.slice("dino")
    assert grad[:, sl].abs().sum() > 0
    assert torch.count_nonzero(grad[:, : sl.start]) == 0  # other models' channels untouched
    assert memory.projections["dino"].grad is None


def test_decode_errors(memory):
    with pytest.raises(UnknownModelError, match="clip, dino"):
        memory.decode("siglip", torch.zeros(2, 10))
    with pytest.raises(InvalidInputError, match="needs its slice of 4 or the full query of 10"):
        memory.decode("clip", torch.zeros(2, 5))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda g, b: g.pop("quats"), "lack"),
        (lambda g, b: g.__setitem__("queries", torch.zeros(40, 9)), "queries"),
        (lambda g, b: g.__setitem__("shN", torch.zeros(40, 8, 3)), "shN"),
        (lambda g, b: g.__setitem__("opacities", torch.zeros(39)), "opacities"),
        (lambda g, b: g.__setitem__("extra_feat", torch.zeros(3, 2)), "40 rows"),
        (lambda g, b: b.pop("dino"), "banks"),
        (lambda g, b: b.__setitem__("clip", torch.zeros(5, 13)), "clip"),
        (lambda g, b: b.__setitem__("clip", torch.zeros(0, 12)), "t >= 1"),
        (lambda g, b: b.__setitem__("clip", torch.full((2, 12), float("nan"))), "finite"),
    ],
)
def test_create_validates(config, banks, mutate, match):
    g = make_gaussians(40, config.query_dim)
    b = dict(banks)
    mutate(g, b)
    with pytest.raises(InvalidInputError, match=match):
        Memory.create(config, g, b)


def test_to_keeps_parameter_objects(memory):
    means = memory.gaussians["means"]
    assert memory.to("cpu") is memory
    assert memory.gaussians["means"] is means
    assert memory.device == torch.device("cpu")
    with pytest.raises(InvalidInputError, match="bad device"):
        memory.to("nodevice")


def test_config_changes_do_not_leak(config, banks):
    cfg = dataclasses.replace(config, gma_temperature=0.5)
    a = Memory.create(config, make_gaussians(5, 10), banks)
    b = Memory.create(cfg, make_gaussians(5, 10), banks)
    q = torch.randn(3, 10)
    assert not torch.allclose(a.decode("clip", q), b.decode("clip", q))
