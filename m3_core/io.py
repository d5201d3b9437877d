"""Atomic file writes: nothing is half-written if the process dies (temp file + rename).

The temp files and folders get the permissions a plain ``open`` / ``mkdir`` would give
(0666 / 0777 less the umask), not ``tempfile``'s private 0600 / 0700: on a robot the memory
server may run as another user than the trainer that wrote the memory on a shared disk.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    """This process's umask (Linux: read, not set; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent`` with the permissions of a plain ``mkdir`` (module
    doc): a staging folder that is renamed into place."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~current_umask())
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the same folder; on success it is renamed onto ``path``.

    The file is fsynced before the rename, so after a crash ``path`` holds either the old or
    the new content, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~current_umask())
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def writable_folder_above(path: str | Path, what: str) -> Path:
    """The nearest existing folder at or above ``path`` (where it would be created), refused
    with an InvalidInputError naming ``what`` when that is a file or cannot be written."""
    from m3_core.errors import InvalidInputError

    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInputError(f"{what}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{what}: {existing} is not writable")
    return existing


def first_missing_folder(path: str | Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet, i.e. the one to remove to
    undo creating ``path`` (None if ``path`` exists)."""
    path = Path(path)
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path
