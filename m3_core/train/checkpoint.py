"""Resumable training checkpoints: the memory and its training state as one atomic unit.

Layout of a memory folder being trained::

    MEM/memory.json, MEM/memory.safetensors   the memory itself (m3_core.memory): what is served
    MEM/train_config.json                     the resolved TrainConfig
    MEM/train_state.json                      the manifest: {"version": 2, "step", "finished",
                                              "checkpoint": folder name or null,
                                              "memory_sha256": the checkpoint memory's digest}
    MEM/train_state-<step>-<random>/          the checkpoint the manifest names:
        memory.json, memory.safetensors       the memory at that step
        state.safetensors, state.json         Adam moments + strategy tensors, their scalars

A save writes a new checkpoint folder completely (every file fsynced), then replaces the
manifest atomically (the commit point), then the served memory, then deletes older checkpoint
folders. A crash at any point leaves a manifest that names a complete, consistent pair of
memory and training state, and resuming loads the memory from that pair
(:func:`resume_dir`): never optimizer moments of one step with Gaussians of another.

When training finishes the checkpoint is deleted and the manifest only records the final step
(``"finished": true, "checkpoint": null``), so running the same command again re-saves instead
of retraining; ``keep_state=True`` keeps the checkpoint (to continue training later with the
exact optimizer state). Version 1 folders (``train_state.safetensors`` beside the served
memory) are still resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from m3_core.errors import CheckpointError
from m3_core.io import atomic_write_bytes, atomic_write_text, make_temp_dir
from m3_core.memory.io import META_FILE, encode_memory, write_memory

STATE_VERSION = 2
MANIFEST = "train_state.json"
PREFIX = "train_state-"
STATE_TENSORS, STATE_META = "state.safetensors", "state.json"
V1_TENSORS = "train_state.safetensors"


def _read_manifest(out_dir: Path) -> dict | None:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read training state {path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") not in (1, STATE_VERSION):
        raise CheckpointError(f"{path}: unknown training-state version {meta.get('version')!r}")
    if not isinstance(meta.get("step"), int):
        raise CheckpointError(f"{path}: the step must be an integer")
    name = meta.get("checkpoint")
    if name is not None and (not isinstance(name, str) or not name.startswith(PREFIX)):
        raise CheckpointError(f"{path}: bad checkpoint folder name {name!r}")
    return meta


def has_train_state(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a training state to resume (or a finished run's record)."""
    return _read_manifest(out_dir) is not None and (Path(out_dir) / META_FILE).exists()


def resume_dir(out_dir: Path) -> Path:
    """The folder holding the memory that pairs with the training state: the checkpoint the
    manifest names, else ``out_dir`` itself (finished runs, version 1, no state)."""
    out_dir = Path(out_dir)
    meta = _read_manifest(out_dir)
    if meta is None or meta.get("version") == 1 or meta.get("checkpoint") is None:
        return out_dir
    folder = out_dir / meta["checkpoint"]
    if not (folder / META_FILE).is_file():
        raise CheckpointError(f"{out_dir / MANIFEST} names {folder.name}, which is missing")
    return folder


def _state_tensors(optimizers: dict[str, torch.optim.Optimizer], strategy_state: dict):
    tensors: dict[str, torch.Tensor] = {}
    for key, opt in optimizers.items():
        for p in opt.param_groups[0]["params"]:
            st = opt.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq", "step"):
                if name in st:
                    tensors[f"opt.{key}.{name}"] = torch.as_tensor(st[name]).detach().cpu()
    for k, v in strategy_state.items():
        if isinstance(v, torch.Tensor):
            tensors[f"strategy.{k}"] = v.detach().cpu()
    return {k: v.contiguous() for k, v in tensors.items()}


def _remove_stale(out_dir: Path, keep: str | None) -> None:
    """Delete checkpoint folders other than ``keep`` (older saves, interrupted writes)."""
    for p in out_dir.glob(f"{PREFIX}*"):
        if p.is_dir() and p.name != keep:
            shutil.rmtree(p, ignore_errors=True)
    (out_dir / V1_TENSORS).unlink(missing_ok=True)


def save_checkpoint(
    out_dir: Path,
    memory,
    extra: dict,
    step: int,
    optimizers: dict[str, torch.optim.Optimizer],
    strategy_state: dict,
    *,
    finished: bool = False,
    keep_state: bool = False,
) -> None:
    """Save ``memory`` (with ``extra`` metadata) and its training state as one unit (module
    doc); ``finished`` drops the training state unless ``keep_state``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blob, meta_text = encode_memory(memory, extra)
    manifest = {
        "version": STATE_VERSION,
        "step": int(step),
        "finished": bool(finished),
        "checkpoint": None,
        "memory_sha256": json.loads(meta_text)["sha256"],
    }
    if not finished or keep_state:
        folder = make_temp_dir(out_dir, f"{PREFIX}{step:07d}-")
        write_memory(folder, blob, meta_text)
        atomic_write_bytes(
            folder / STATE_TENSORS, st_save(_state_tensors(optimizers, strategy_state))
        )
        scalars = {k: v for k, v in strategy_state.items() if isinstance(v, (int, float))}
        state_meta = {"step": int(step), "strategy_scalars": scalars}
        atomic_write_text(folder / STATE_META, json.dumps(state_meta, indent=2) + "\n")
        manifest["checkpoint"] = folder.name
        atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")  # commit
        write_memory(out_dir, blob, meta_text)
    else:  # the served memory first: until the manifest says finished, the old pair resumes
        write_memory(out_dir, blob, meta_text)
        atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    _remove_stale(out_dir, manifest["checkpoint"])
    memory.extra = json.loads(meta_text)["extra"]
    memory.source = out_dir


def load_train_state(
    out_dir: Path,
    optimizers: dict[str, torch.optim.Optimizer],
    strategy_state: dict,
) -> int:
    """Restore optimizer moments and strategy state in place; return the saved step. The
    optimizers must be built on the memory loaded from :func:`resume_dir`. A finished run
    without kept state restores nothing and returns its final step."""
    out_dir = Path(out_dir)
    meta = _read_manifest(out_dir)
    if meta is None:
        raise CheckpointError(f"no training state in {out_dir}")
    if meta["version"] == 1:
        tensor_path, scalars = out_dir / V1_TENSORS, meta.get("strategy_scalars", {})
    elif meta.get("checkpoint") is None:
        return int(meta["step"])
    else:
        folder = resume_dir(out_dir)
        tensor_path = folder / STATE_TENSORS
        try:
            scalars = json.loads((folder / STATE_META).read_text())["strategy_scalars"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read training state in {folder}: {exc}") from None
    try:
        tensors = st_load(tensor_path.read_bytes())
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read training state {tensor_path}: {exc}") from None
    for key, opt in optimizers.items():
        (p,) = opt.param_groups[0]["params"]
        if f"opt.{key}.exp_avg" not in tensors:
            continue
        st = {n: tensors[f"opt.{key}.{n}"] for n in ("exp_avg", "exp_avg_sq", "step")}
        if st["exp_avg"].shape != p.shape:
            raise CheckpointError(
                f"{out_dir}: optimizer state for {key} has shape {tuple(st['exp_avg'].shape)}, "
                f"parameter has {tuple(p.shape)}"
            )
        on_device = opt.defaults.get("fused") or opt.defaults.get("capturable")
        opt.state[p] = {  # fused/capturable Adam keeps its step count on the parameter's device
            "step": st["step"].to(p.device if on_device else "cpu", torch.float32),
            "exp_avg": st["exp_avg"].to(p.device),
            "exp_avg_sq": st["exp_avg_sq"].to(p.device),
        }
    for k in list(strategy_state):
        if f"strategy.{k}" in tensors:
            strategy_state[k] = tensors[f"strategy.{k}"]
    strategy_state.update(scalars)
    return int(meta["step"])
