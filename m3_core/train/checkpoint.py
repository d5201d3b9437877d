"""Resumable training state beside a memory: optimizer moments, strategy state, step.

Layout of a memory folder being trained::

    MEM/memory.json, MEM/memory.safetensors   the memory itself (m3_core.memory)
    MEM/train_config.json                     the resolved TrainConfig
    MEM/train_state.safetensors               Adam moments + strategy tensors
    MEM/train_state.json                      step, scene scale, format version

All files are written atomically; the memory files are written last-but-one and the state
JSON last, so a crash mid-save leaves the previous consistent checkpoint readable (the step in
the state JSON always matches tensors of at least that step).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from m3_core.errors import CheckpointError
from m3_core.io import atomic_path, atomic_write_text

STATE_VERSION = 1


def has_train_state(out_dir: Path) -> bool:
    return (out_dir / "train_state.json").exists() and (out_dir / "memory.json").exists()


def save_train_state(
    out_dir: Path,
    step: int,
    optimizers: dict[str, torch.optim.Optimizer],
    strategy_state: dict,
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for key, opt in optimizers.items():
        for p in opt.param_groups[0]["params"]:
            st = opt.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq", "step"):
                if name in st:
                    tensors[f"opt.{key}.{name}"] = torch.as_tensor(st[name]).detach().cpu()
    for k, v in strategy_state.items():
        if isinstance(v, torch.Tensor):
            tensors[f"strategy.{k}"] = v.detach().cpu().contiguous()
    with atomic_path(out_dir / "train_state.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    meta = {
        "version": STATE_VERSION,
        "step": step,
        "strategy_scalars": {
            k: v for k, v in strategy_state.items() if isinstance(v, (int, float))
        },
    }
    atomic_write_text(out_dir / "train_state.json", json.dumps(meta, indent=2) + "\n")


def load_train_state(
    out_dir: Path,
    optimizers: dict[str, torch.optim.Optimizer],
    strategy_state: dict,
) -> int:
    """Restore optimizer moments and strategy state in place; return the saved step."""
    try:
        meta = json.loads((out_dir / "train_state.json").read_text())
        tensors = load_file(str(out_dir / "train_state.safetensors"))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read training state in {out_dir}: {exc}") from None
    if meta.get("version") != STATE_VERSION:
        raise CheckpointError(f"{out_dir}: unknown training-state version {meta.get('version')}")
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
        opt.state[p] = {
            "step": st["step"].to(torch.float32),
            "exp_avg": st["exp_avg"].to(p.device),
            "exp_avg_sq": st["exp_avg_sq"].to(p.device),
        }
    for k in list(strategy_state):
        if f"strategy.{k}" in tensors:
            strategy_state[k] = tensors[f"strategy.{k}"]
    strategy_state.update(meta.get("strategy_scalars", {}))
    return int(meta["step"])
