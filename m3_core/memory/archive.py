"""Ship a saved memory as one byte string (a tar), e.g. from a GPU trainer to a robot.

``pack_memory(DIR)`` -> bytes holding what a memory server needs: ``memory.json``,
``memory.safetensors``, ``train_config.json``, the grounding index ``grounding.safetensors``
(lifted queries and fitted relevancy temperatures: a server cannot refit them without the
training features) and ``features/<name>/*`` (the text-side vocabulary/meta); training state
(``train_state.*``) stays behind. ``unpack_memory(bytes, DIR)``
checks every member (plain files with relative names inside the memory only), extracts into a
temp folder beside ``DIR``, verifies the tensor file against ``memory.json``'s SHA-256, and
only then renames the folder into place: a truncated or hostile archive is an error and
changes nothing. An identical memory already at ``DIR`` is kept as is.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from m3_core.errors import CheckpointError
from m3_core.io import make_temp_dir
from m3_core.memory.grounding import INDEX_FILE
from m3_core.memory.io import META_FILE, TENSOR_FILE, read_meta

TOP_FILES = (META_FILE, TENSOR_FILE, "train_config.json", INDEX_FILE)
MAX_MEMBERS = 10_000


def memory_digest(directory: str | Path) -> str:
    """The SHA-256 of the memory's tensor file as recorded in its ``memory.json``."""
    return read_meta(directory)["sha256"]


def _members(directory: Path) -> list[Path]:
    files = [directory / name for name in TOP_FILES if (directory / name).is_file()]
    if (directory / "features").is_dir():
        files += sorted(p for p in (directory / "features").rglob("*") if p.is_file())
    return files


def pack_memory(directory: str | Path) -> bytes:
    """An uncompressed tar of the memory in ``directory`` (see module doc)."""
    directory = Path(directory)
    read_meta(directory)  # a clear error for a folder that is not a memory
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _members(directory):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(directory).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def _check_member(info: tarfile.TarInfo) -> None:
    name = PurePosixPath(info.name)
    if not info.isfile():
        raise CheckpointError(f"memory archive member {info.name!r} is not a plain file")
    if name.is_absolute() or ".." in name.parts or not name.parts:
        raise CheckpointError(f"memory archive member {info.name!r} escapes the memory folder")
    if not (info.name in TOP_FILES or name.parts[0] == "features"):
        raise CheckpointError(f"memory archive member {info.name!r} is not part of a memory")


def _verify(directory: Path) -> str:
    meta = read_meta(directory)
    blob_path = directory / TENSOR_FILE
    if not blob_path.is_file():
        raise CheckpointError(f"memory archive lacks {TENSOR_FILE}")
    digest = hashlib.sha256(blob_path.read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise CheckpointError(
            f"memory archive's {TENSOR_FILE} does not match its {META_FILE} (checksum differs)"
        )
    return digest


def unpack_memory(data: bytes, directory: str | Path) -> Path:
    """Extract a :func:`pack_memory` archive into ``directory`` (atomically; module doc)."""
    directory = Path(directory)
    try:
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise CheckpointError(f"memory archive is not a readable tar: {exc}") from None
    if len(members) > MAX_MEMBERS:
        raise CheckpointError(f"memory archive has {len(members)} members (> {MAX_MEMBERS})")
    for info in members:
        _check_member(info)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(directory.parent, f".{directory.name}.")
    try:
        with tar:
            for info in members:
                dest = tmp / info.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(info)
                with open(dest, "wb") as f:
                    shutil.copyfileobj(src, f)
        digest = _verify(tmp)
        if directory.exists():
            try:
                if memory_digest(directory) == digest:
                    return directory  # the same memory is already here
            except CheckpointError:
                pass  # a broken folder: replaced below
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot unpack the memory archive into {directory}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory
