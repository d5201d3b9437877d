"""Atomic writes: content replaced whole, nothing left behind, and the permissions of a plain
write (another user on the robot, such as the memory server's, can read what was written)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from m3_core.io import atomic_path, atomic_write_text, current_umask, make_temp_dir


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing_it(umask_027):
    assert current_umask() == 0o027
    assert current_umask() == 0o027  # unchanged by reading


def test_atomic_files_get_a_plain_writes_permissions(tmp_path, umask_027):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "a" / "memory.json", "{}")
    assert _mode(tmp_path / "a" / "memory.json") == _mode(plain) == 0o640  # 0666 & ~027
    assert (tmp_path / "a" / "memory.json").read_text() == "{}"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["memory.json"]  # no temp left


def test_staging_folders_get_a_plain_mkdirs_permissions(tmp_path, umask_027):
    (tmp_path / "plain").mkdir()
    staged = make_temp_dir(tmp_path, ".live.")
    assert staged.parent == tmp_path and staged.name.startswith(".live.")
    assert _mode(staged) == _mode(tmp_path / "plain") == 0o750


def test_a_failed_write_keeps_the_old_content(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash before the rename")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
