"""Save / load a :class:`~m3_core.memory.Memory`: one safetensors file + one JSON file.

Folder layout::

    DIR/memory.safetensors   tensors: "gaussians.<key>", "proj.<model>", "psc.<model>"
    DIR/memory.json          {"format": "m3-memory", "format_version": 2,
                              "config": MemoryConfig (to_dict), "layout": ChannelLayout,
                              "tensors": {key: {"shape": [...], "dtype": "float32"}},
                              "sha256": hex digest of memory.safetensors, "extra": {...},
                              "meta_sha256": hex digest of everything else in this file}

Both files are written atomically (temp + fsync + rename), tensors first, JSON last: the JSON
names the exact tensor file (by SHA-256) it belongs to, and ``meta_sha256`` covers the JSON's
own values (its canonical form: sorted keys, no spaces), so a crash between the two renames,
a truncated or bit-flipped tensor file, a file from another save, or a value edited in
``memory.json`` is a CheckpointError at load time, never a silently different memory. The
config is type-checked on load. Version 1 files (no ``meta_sha256``) are still read. Loading
uses safetensors only (no pickle).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from m3_core.config import MemoryConfig, from_dict, to_dict
from m3_core.errors import CheckpointError, InvalidInputError, M3Error
from m3_core.io import atomic_write_bytes, atomic_write_text

FORMAT = "m3-memory"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
TENSOR_FILE = "memory.safetensors"
META_FILE = "memory.json"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def meta_digest(meta: Mapping[str, Any]) -> str:
    """SHA-256 of ``meta`` without its ``meta_sha256`` entry, in canonical JSON."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def encode_memory(memory, extra: Mapping[str, Any] | None = None) -> tuple[bytes, str]:
    """(tensor file bytes, memory.json text) of ``memory`` with ``extra`` merged into its
    metadata; nothing is written (see :func:`write_memory`)."""
    meta_extra = {**memory.extra, **dict(extra or {})}
    try:
        json.dumps(meta_extra)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"memory extra metadata is not JSON-serialisable: {exc}") from None
    tensors: dict[str, torch.Tensor] = {}
    for k, v in memory.gaussians.items():
        tensors[f"gaussians.{k}"] = v.detach().cpu().contiguous()
    for k, v in memory.projections.items():
        tensors[f"proj.{k}"] = v.detach().cpu().contiguous()
    for k, v in memory.banks.items():
        tensors[f"psc.{k}"] = v.detach().cpu().contiguous()
    blob = st_save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": to_dict(memory.config),
        "layout": memory.layout.to_dict(),
        "num_gaussians": memory.num_gaussians,
        "tensors": {
            k: {"shape": list(v.shape), "dtype": _dtype_name(v.dtype)}
            for k, v in sorted(tensors.items())
        },
        "sha256": hashlib.sha256(blob).hexdigest(),
        "extra": meta_extra,
    }
    meta = json.loads(json.dumps(meta))  # the values exactly as a reader will parse them
    meta["meta_sha256"] = meta_digest(meta)
    return blob, json.dumps(meta, indent=2, sort_keys=True) + "\n"


def write_memory(directory: str | Path, blob: bytes, meta_text: str) -> Path:
    """Write :func:`encode_memory`'s output into ``directory``: tensors, then the JSON."""
    directory = Path(directory)
    atomic_write_bytes(directory / TENSOR_FILE, blob)
    atomic_write_text(directory / META_FILE, meta_text)
    return directory


def save_memory(memory, directory: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``memory`` into ``directory`` (created if needed); see the module doc."""
    blob, meta_text = encode_memory(memory, extra)
    write_memory(directory, blob, meta_text)
    memory.extra = json.loads(meta_text)["extra"]
    memory.source = Path(directory)
    return Path(directory)


def read_meta(directory: str | Path) -> dict[str, Any]:
    """Parse and check ``DIR/memory.json`` (format and version); CheckpointError otherwise."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"memory folder {directory} does not exist or is not a folder")
    path = directory / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing (not a saved memory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an m3 memory description (format != {FORMAT!r})")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has format version {version!r}; this m3_core reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    for key in ("config", "tensors", "sha256") + (("meta_sha256",) if version >= 2 else ()):
        if key not in meta:
            raise CheckpointError(f"{path} lacks the {key!r} entry")
    if version >= 2 and meta["meta_sha256"] != meta_digest(meta):
        raise CheckpointError(
            f"{path} does not match its checksum (meta_sha256): a value in it was edited or "
            "the file is corrupt; save the memory again instead of editing it"
        )
    return meta


def load_memory(directory: str | Path, device: torch.device | str = "cpu"):
    """Load the memory saved in ``directory`` onto ``device`` (see :meth:`Memory.load`)."""
    from m3_core.memory.memory import Memory

    directory = Path(directory)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"bad device {device!r}: {exc}") from None
    meta = read_meta(directory)
    meta_path, tensor_path = directory / META_FILE, directory / TENSOR_FILE
    try:
        config = from_dict(MemoryConfig, meta["config"], where=f"{meta_path}: config")
    except (M3Error, TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: bad memory config: {exc}") from None
    try:
        blob = tensor_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{tensor_path} is missing") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {tensor_path}: {exc}") from None
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise CheckpointError(
            f"{tensor_path} does not match {meta_path} (checksum differs): the file is "
            "truncated, corrupt, or from another save"
        )
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{tensor_path} is not a valid safetensors file: {exc}") from None
    del blob
    _check_tensor_table(meta["tensors"], tensors, tensor_path, meta_path)
    gaussians = torch.nn.ParameterDict()
    projections = torch.nn.ParameterDict()
    banks: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        group, _, name = key.partition(".")
        if group == "gaussians":
            gaussians[name] = torch.nn.Parameter(t.to(device))
        elif group == "proj":
            projections[name] = torch.nn.Parameter(
                t.to(device), requires_grad=config.train_projection
            )
        elif group == "psc":
            banks[name] = t.to(device)
        else:
            raise CheckpointError(f"{tensor_path}: unexpected tensor {key!r}")
    try:
        memory = Memory(config, gaussians, projections, banks, extra=meta.get("extra") or {})
    except InvalidInputError as exc:
        raise CheckpointError(f"{directory}: inconsistent memory: {exc}") from None
    memory.source = directory
    return memory


def _check_tensor_table(
    table: Any, tensors: Mapping[str, torch.Tensor], tensor_path: Path, meta_path: Path
) -> None:
    if not isinstance(table, dict):
        raise CheckpointError(f"{meta_path}: 'tensors' must be an object")
    if sorted(table) != sorted(tensors):
        missing = sorted(set(table) - set(tensors))
        unexpected = sorted(set(tensors) - set(table))
        raise CheckpointError(
            f"{tensor_path} does not match {meta_path}: missing {missing}, unexpected {unexpected}"
        )
    for key, t in tensors.items():
        want = table[key]
        if not isinstance(want, dict):
            raise CheckpointError(f"{meta_path}: bad entry for tensor {key!r}")
        got = {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)}
        if want.get("shape") != got["shape"] or want.get("dtype") != got["dtype"]:
            raise CheckpointError(
                f"{tensor_path} does not match {meta_path}: {key} is {got}, JSON says {want}"
            )


def disk_bytes(directory: str | Path) -> int | None:
    """Size of the two memory files in ``directory`` (None if either is absent)."""
    directory = Path(directory)
    try:
        return sum((directory / f).stat().st_size for f in (TENSOR_FILE, META_FILE))
    except OSError:
        return None


def memory_info(memory) -> dict[str, Any]:
    """The summary behind :meth:`Memory.info` and ``m3 info`` (JSON-able)."""
    layout = memory.layout
    models = []
    for spec in memory.config.models:
        sl = layout.slice(spec.name)
        models.append(
            {
                "name": spec.name,
                "dim": spec.dim,
                "query_channels": spec.query_channels,
                "slice": [sl.start, sl.stop],
                "psc_threshold": spec.psc_threshold,
                "psc_size": int(memory.banks[spec.name].shape[0]),
                "projection_trainable": bool(memory.projections[spec.name].requires_grad),
            }
        )
    n_params = sum(p.numel() for p in memory.gaussians.values())
    n_params += sum(p.numel() for p in memory.projections.values())
    return {
        "path": str(memory.source) if memory.source is not None else None,
        "format_version": FORMAT_VERSION,
        "num_gaussians": memory.num_gaussians,
        "query_dim": layout.total,
        "sh_degree": memory.config.sh_degree,
        "gma_temperature": memory.config.gma_temperature,
        "train_projection": memory.config.train_projection,
        "models": models,
        "parameters": int(n_params),
        "psc_rows": int(sum(b.shape[0] for b in memory.banks.values())),
        "bytes_on_disk": disk_bytes(memory.source) if memory.source is not None else None,
        "device": str(memory.device),
        "extra": dict(memory.extra),
    }
