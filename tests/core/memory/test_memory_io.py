"""Memory save/load: round trip, atomic files, and every kind of broken checkpoint."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from m3_core.config import MemoryConfig, to_dict
from m3_core.errors import CheckpointError, InvalidInputError
from m3_core.memory import FORMAT_VERSION, Memory
from m3_core.memory.io import meta_digest


def _assert_same(a: Memory, b: Memory) -> None:
    assert to_dict(a.config) == to_dict(b.config)
    for src, dst in (
        (a.gaussians, b.gaussians),
        (a.projections, b.projections),
        (a.banks, b.banks),
    ):
        assert sorted(src) == sorted(dst)
        for k in src:
            assert torch.equal(src[k].detach(), dst[k].detach())


def test_round_trip(memory, tmp_path):
    memory.save(tmp_path / "mem", extra={"step": 12, "world_frame": "map"})
    assert sorted(p.name for p in (tmp_path / "mem").iterdir()) == [
        "memory.json",
        "memory.safetensors",
    ]  # no temp files left behind
    loaded = Memory.load(tmp_path / "mem")
    _assert_same(memory, loaded)
    assert loaded.extra == {"step": 12, "world_frame": "map"}
    assert loaded.layout == memory.layout
    assert all(not w.requires_grad for w in loaded.projections.values())
    assert all(p.requires_grad for p in loaded.gaussians.values())
    q = torch.randn(7, memory.layout.total)
    torch.testing.assert_close(loaded.decode("clip", q), memory.decode("clip", q))


def test_file_contents(memory, tmp_path):
    memory.save(tmp_path)
    meta = json.loads((tmp_path / "memory.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert MemoryConfig.__name__ and meta["config"] == to_dict(memory.config)
    assert meta["tensors"]["gaussians.means"] == {"shape": [40, 3], "dtype": "float32"}
    assert meta["tensors"]["psc.clip"]["shape"] == [5, 12]
    assert meta["tensors"]["proj.dino"]["shape"] == [6, 8]
    tensors = load_file(str(tmp_path / "memory.safetensors"))
    assert set(tensors) == set(meta["tensors"])


def test_load_uses_no_pickle(memory, tmp_path, monkeypatch):
    memory.save(tmp_path)

    def boom(*a, **k):
        raise AssertionError("torch.load (pickle) must not be used")

    monkeypatch.setattr(torch, "load", boom)
    Memory.load(tmp_path)


def test_train_projection_and_resave_merges_extra(config, banks, tmp_path):
    from tests.core.memory.conftest import make_gaussians

    config.train_projection = True
    m = Memory.create(config, make_gaussians(8, 10), banks)
    m.save(tmp_path, extra={"step": 1, "frame": "map"})
    m.save(tmp_path, extra={"step": 2})
    loaded = Memory.load(tmp_path)
    assert loaded.extra == {"step": 2, "frame": "map"}
    assert all(w.requires_grad for w in loaded.projections.values())


def test_info(memory, tmp_path):
    fresh = memory.info()
    assert fresh["bytes_on_disk"] is None and fresh["path"] is None
    memory.save(tmp_path)
    info = Memory.load(tmp_path).info()
    size = (tmp_path / "memory.json").stat().st_size
    size += (tmp_path / "memory.safetensors").stat().st_size
    assert info["bytes_on_disk"] == size
    assert info["num_gaussians"] == 40 and info["query_dim"] == 10
    assert [m["name"] for m in info["models"]] == ["clip", "dino"]
    assert info["models"][1]["slice"] == [4, 10] and info["models"][1]["psc_size"] == 6
    assert info["psc_rows"] == 11
    json.dumps(info)


def test_unserialisable_extra_writes_nothing(memory, tmp_path):
    with pytest.raises(InvalidInputError, match="JSON"):
        memory.save(tmp_path / "m", extra={"bad": object()})
    assert not (tmp_path / "m").exists()


# -- broken checkpoints ---------------------------------------------------------------------
def _rewrite_tensors(path, tensors):
    """Write new tensors and make memory.json's checksum agree (to reach the later checks)."""
    save_file(tensors, str(path / "memory.safetensors"))
    meta = json.loads((path / "memory.json").read_text())
    meta["sha256"] = hashlib.sha256((path / "memory.safetensors").read_bytes()).hexdigest()
    meta["meta_sha256"] = meta_digest(meta)
    (path / "memory.json").write_text(json.dumps(meta))


def _edit_json(path, fn, restamp=True):
    """Edit memory.json; ``restamp`` makes its own checksum agree (to reach later checks)."""
    meta = json.loads((path / "memory.json").read_text())
    fn(meta)
    if restamp:
        meta["meta_sha256"] = meta_digest(meta)
    (path / "memory.json").write_text(json.dumps(meta))


def _truncate(p):
    data = (p / "memory.safetensors").read_bytes()
    (p / "memory.safetensors").write_bytes(data[: len(data) // 2])


def _garbage_with_matching_sum(p):
    (p / "memory.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}" * 4)
    _edit_json(
        p,
        lambda m: m.update(
            sha256=hashlib.sha256((p / "memory.safetensors").read_bytes()).hexdigest()
        ),
    )


def _drop_tensor(p):
    t = load_file(str(p / "memory.safetensors"))
    t.pop("psc.dino")
    _rewrite_tensors(p, t)


def _shape_in_json(p):
    def f(m):
        m["tensors"]["gaussians.means"]["shape"] = [41, 3]

    _edit_json(p, f)


def _inconsistent_tensors(p):
    t = load_file(str(p / "memory.safetensors"))
    t["psc.clip"] = torch.zeros(3, 5)
    _rewrite_tensors(p, t)
    _edit_json(p, lambda m: m["tensors"]["psc.clip"].update(shape=[3, 5]))


BROKEN = {
    "missing folder": (lambda p: p.rename(p.parent / "elsewhere"), "does not exist"),
    "missing json": (lambda p: (p / "memory.json").unlink(), "memory.json is missing"),
    "missing tensors": (lambda p: (p / "memory.safetensors").unlink(), "is missing"),
    "bad json": (lambda p: (p / "memory.json").write_text("{oops"), "not readable JSON"),
    "not a memory": (lambda p: (p / "memory.json").write_text("[1, 2]"), "not an m3 memory"),
    "future version": (
        lambda p: _edit_json(p, lambda m: m.update(format_version=99)),
        "format version 99",
    ),
    "bad config": (
        lambda p: _edit_json(p, lambda m: m["config"].update(colour="red")),
        "bad memory config",
    ),
    "edited value": (
        lambda p: _edit_json(p, lambda m: m["extra"].update(step=99), restamp=False),
        "meta_sha256",
    ),
    "edited config": (
        lambda p: _edit_json(p, lambda m: m["config"].update(sh_degree=0), restamp=False),
        "meta_sha256",
    ),
    "wrong type": (
        lambda p: _edit_json(p, lambda m: m["config"].update(sh_degree="1")),
        "sh_degree must be int",
    ),
    "truncated tensors": (_truncate, "checksum differs"),
    "corrupt tensors": (_garbage_with_matching_sum, "not a valid safetensors"),
    "tensor missing": (_drop_tensor, "missing \\['psc.dino'\\]"),
    "json shape mismatch": (_shape_in_json, "gaussians.means"),
    "inconsistent parts": (_inconsistent_tensors, "inconsistent memory"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_checkpoint(memory, tmp_path, case):
    path = tmp_path / "mem"
    memory.save(path)
    breaker, match = BROKEN[case]
    breaker(path)
    with pytest.raises(CheckpointError, match=match) as exc:
        Memory.load(path)
    assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_version_1_memories_still_load(memory, tmp_path):
    """Memories saved before the JSON checksum (format version 1) load as before."""
    memory.save(tmp_path / "m")
    _edit_json(tmp_path / "m", lambda m: (m.pop("meta_sha256"), m.update(format_version=1)), False)
    _assert_same(memory, Memory.load(tmp_path / "m"))
