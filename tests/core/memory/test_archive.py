"""pack_memory / unpack_memory: a memory crosses hosts as bytes; bad archives change nothing."""

from __future__ import annotations

import io
import tarfile

import pytest
import torch

from m3_core.errors import CheckpointError
from m3_core.memory import Memory
from m3_core.memory.archive import memory_digest, pack_memory, unpack_memory


@pytest.fixture
def saved(memory, tmp_path):
    src = tmp_path / "trainer" / "mem"
    memory.save(src)
    (src / "features" / "clip").mkdir(parents=True)
    (src / "features" / "clip" / "meta.json").write_text('{"extractor": "clip"}')
    (src / "train_state.safetensors").write_bytes(b"x" * 1000)  # stays behind
    (src / "train_config.json").write_text("{}")
    (src / "grounding.safetensors").write_bytes(b"index")  # the fitted grounding index
    return src


def _tar(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


def test_round_trip_carries_what_a_server_needs(memory, saved, tmp_path):
    data = pack_memory(saved)
    dest = unpack_memory(data, tmp_path / "robot" / "mem")
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert names == [
        "features/clip/meta.json",
        "grounding.safetensors",
        "memory.json",
        "memory.safetensors",
        "train_config.json",
    ]
    assert memory_digest(dest) == memory_digest(saved)
    loaded = Memory.load(dest)
    for k, v in memory.gaussians.items():
        torch.testing.assert_close(loaded.gaussians[k].detach(), v.detach(), rtol=0, atol=0)
    assert [p.name for p in dest.parent.iterdir()] == ["mem"]  # no temp folders left


def test_replaces_an_older_memory_and_keeps_an_identical_one(memory, saved, tmp_path):
    dest = tmp_path / "robot" / "mem"
    unpack_memory(pack_memory(saved), dest)
    stamp = (dest / "memory.json").stat().st_mtime_ns
    unpack_memory(pack_memory(saved), dest)
    assert (dest / "memory.json").stat().st_mtime_ns == stamp  # same memory: untouched
    with torch.no_grad():
        memory.gaussians["means"] += 1.0
    memory.save(saved)
    unpack_memory(pack_memory(saved), dest)
    assert memory_digest(dest) == memory_digest(saved)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["mem"]


@pytest.mark.parametrize(
    "case, match",
    [
        ("truncated", "not a readable tar|cannot unpack"),
        ("escape", "escapes the memory folder"),
        ("foreign", "not part of a memory"),
        ("symlink", "not a plain file"),
        ("tampered", "checksum differs"),
        ("no_json", "missing"),
    ],
)
def test_bad_archives_are_refused_and_change_nothing(case, match, saved, tmp_path):
    dest = tmp_path / "robot" / "mem"
    unpack_memory(pack_memory(saved), dest)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    meta = (saved / "memory.json").read_bytes()
    blob = (saved / "memory.safetensors").read_bytes()
    data = {
        "truncated": pack_memory(saved)[: len(blob) // 2],
        "escape": _tar({"../evil.txt": b"x", "memory.json": meta}),
        "foreign": _tar({"memory.json": meta, "notes/x.sh": b"x"}),
        "symlink": _tar({"memory.json": meta}, symlink="features/link"),
        "tampered": _tar({"memory.json": meta, "memory.safetensors": blob[:-4] + b"abcd"}),
        "no_json": _tar({"memory.safetensors": blob}),
    }[case]
    with pytest.raises(CheckpointError, match=match):
        unpack_memory(data, dest)
    after = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["mem"]
    assert not (tmp_path / "robot" / "evil.txt").exists()


def test_packing_a_folder_that_is_not_a_memory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        pack_memory(tmp_path / "nope")
