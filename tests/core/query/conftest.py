"""Fixtures for the query tests: a hand-built memory whose Gaussians decode to known labels.

The "labels" model has an orthonormal PSC bank (one row per label, d = 16) and its projection
is set to the identity, so a Gaussian whose query slice equals bank row k decodes to row k
(GMA attention ~ e^20 / (e^20 + K - 1) on it with tau = 0.05). Gaussians are placed in
isotropic blobs around known centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from m3_core.config import MemoryConfig
from m3_core.extractors.base import FeatureExtractor
from m3_core.extractors.registry import register, unregister
from m3_core.memory import Memory
from m3_core.query.relevancy import DEFAULT_NEGATIVES
from m3_core.types import Camera, ModelSpec

LABELS = ["floor", "chair", "table", "lamp"]  # "lamp": in the vocabulary, absent from the scene
DIM = 16
CHAIR_CENTER = (2.0, 0.5, 0.0)
TABLE_CENTER = (2.0, -0.8, 0.0)


@dataclass
class Blob:
    label: str
    center: tuple[float, float, float]
    n: int
    spread: float = 0.08  # half-edge of the uniform cube the centres are drawn from


def basis() -> torch.Tensor:  # [DIM, DIM], orthonormal rows; the first len(LABELS) = labels
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(3)))
    return q.T.contiguous()


def label_bank() -> torch.Tensor:  # [K, DIM], orthonormal rows
    return basis()[: len(LABELS)].contiguous()


class FakeTower(FeatureExtractor):
    """An extractor with a text tower only: labels -> their bank rows; the canonical
    negatives -> the mean label direction (cosine 0.5 with every label, like "object" in
    CLIP); any other text -> a basis vector orthogonal to all labels."""

    name, dim, stride, has_text = "testtower", DIM, 1, True
    calls: list[str] = []

    def __init__(self, device) -> None:
        super().__init__()
        self.device = torch.device(device)

    def _encode(self, x):  # pragma: no cover - text only
        raise NotImplementedError

    def _encode_text(self, texts):
        FakeTower.calls.extend(texts)
        b = basis()
        out = []
        for t in texts:
            if t in LABELS:
                out.append(b[LABELS.index(t)])
            elif t in DEFAULT_NEGATIVES:
                out.append(b[: len(LABELS)].sum(0) / 2)
            else:
                out.append(b[DIM - 1])
        return torch.stack(out)


@pytest.fixture
def fake_tower():
    """Registers "testtower" in the extractor registry for the test."""
    FakeTower.calls = []
    register("testtower", lambda *, weights, device, **kw: FakeTower(device))
    yield FakeTower
    unregister("testtower")


def build_memory(blobs: list[Blob], *, seed: int = 0, opacity: float = 0.95) -> Memory:
    """A memory with one model "labels" (DIM query channels, identity projection)."""
    gen = torch.Generator().manual_seed(seed)
    bank = label_bank()
    means, queries = [], []
    for b in blobs:
        c = torch.tensor(b.center, dtype=torch.float32)
        means.append(c + (torch.rand(b.n, 3, generator=gen) * 2 - 1) * b.spread)
        queries.append(bank[LABELS.index(b.label)].expand(b.n, DIM))
    n = sum(b.n for b in blobs)
    cfg = MemoryConfig(models=[ModelSpec("labels", DIM, DIM, 0.95)], sh_degree=0)
    params = {
        "means": torch.cat(means),
        "scales": torch.full((n, 3), math.log(0.04)),
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        "opacities": torch.full((n,), math.log(opacity / (1 - opacity))),
        "sh0": torch.rand(n, 1, 3, generator=gen),
        "shN": torch.zeros(n, 0, 3),
        "queries": torch.cat(queries).clone(),
    }
    mem = Memory.create(cfg, params, {"labels": bank})
    with torch.no_grad():
        mem.projections["labels"].copy_(torch.eye(DIM))
    return mem


def scene_blobs() -> list[Blob]:
    return [
        Blob("chair", CHAIR_CENTER, 200),
        Blob("table", TABLE_CENTER, 120),
        Blob("floor", (2.0, 0.0, -1.0), 150, spread=0.6),
    ]


def front_camera(width: int = 64, height: int = 48, f: float = 50.0) -> Camera:
    """At the origin looking along +x (world z up): image right = -y, image down = -z."""
    c2w = torch.eye(4)
    c2w[:3, 0] = torch.tensor([0.0, -1.0, 0.0])
    c2w[:3, 1] = torch.tensor([0.0, 0.0, -1.0])
    c2w[:3, 2] = torch.tensor([1.0, 0.0, 0.0])
    return Camera(f, f, width / 2, height / 2, width, height, c2w)


def pixel_of(point, cam: Camera) -> tuple[int, int]:
    """(row, col) of a world point in ``front_camera``."""
    p = torch.linalg.inv(cam.c2w) @ torch.tensor([*point, 1.0])
    u = cam.fx * p[0] / p[2] + cam.cx
    v = cam.fy * p[1] / p[2] + cam.cy
    return int(v), int(u)


@pytest.fixture
def scene_memory() -> Memory:
    return build_memory(scene_blobs())


@pytest.fixture
def vocab() -> dict[str, tuple[list[str], torch.Tensor]]:
    return {"labels": (list(LABELS), label_bank())}


@pytest.fixture
def memory_dir(tmp_path, scene_memory):
    """The scene memory saved as a self-contained folder (with its vocabulary and meta)."""
    from m3_core.data.features import FeatureStore

    out = tmp_path / "mem"
    scene_memory.save(out)
    store = FeatureStore(out, "labels")
    store.save_vocabulary(LABELS, label_bank())
    store.save_meta({"model": "synthetic-labels", "dim": DIM})
    return out
