"""Checkpoints are one atomic unit: a crash at any point of a save leaves a resumable pair."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import m3_core.train.checkpoint as ckpt
from m3_core.config import MemoryConfig
from m3_core.errors import CheckpointError
from m3_core.memory import Memory
from m3_core.types import ModelSpec
from tests.core.memory.conftest import make_gaussians


class Crash(BaseException):
    """A simulated kill: not an Exception, so nothing on the way catches it."""


def trained(n: int, seed: int):
    """A memory of n Gaussians, one Adam per parameter after one step, a strategy state."""
    cfg = MemoryConfig(models=[ModelSpec("labels", 8, 4, 0.9)], sh_degree=1)
    banks = {"labels": torch.randn(5, 8, generator=torch.Generator().manual_seed(seed))}
    mem = Memory.create(cfg, make_gaussians(n, cfg.query_dim, 1, seed), banks, seed=seed)
    opts = {k: torch.optim.Adam([p], lr=1e-3) for k, p in mem.gaussians.items()}
    for k, p in mem.gaussians.items():
        p.grad = torch.randn_like(p)
        opts[k].step()
    state = {"grad2d": torch.rand(n), "count": torch.rand(n), "scene_scale": 1.5}
    return mem, opts, state


def resume(out):
    """What the trainer does: the memory of the saved pair, optimizers on it, the state."""
    mem = Memory.load(ckpt.resume_dir(out))
    opts = {k: torch.optim.Adam([p], lr=1e-3) for k, p in mem.gaussians.items()}
    state = {"grad2d": None, "count": None, "scene_scale": 0.0}
    step = ckpt.load_train_state(out, opts, state)
    return mem, opts, state, step


def assert_same_state(opts_a, opts_b, state_a, state_b):
    for k, opt in opts_a.items():
        (pa,), (pb,) = opt.param_groups[0]["params"], opts_b[k].param_groups[0]["params"]
        torch.testing.assert_close(pa.detach(), pb.detach(), rtol=0, atol=0)
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(
                torch.as_tensor(opt.state[pa][name]).float(),
                torch.as_tensor(opts_b[k].state[pb][name]).float(),
                rtol=0,
                atol=0,
            )
    torch.testing.assert_close(state_a["grad2d"], state_b["grad2d"], rtol=0, atol=0)
    assert state_a["scene_scale"] == state_b["scene_scale"]


WRITES_PER_SAVE = 7  # checkpoint: 2 memory files + 2 state files; manifest; served memory x2
COMMIT = 5  # the manifest's rename


@pytest.mark.parametrize("crash_at", range(1, WRITES_PER_SAVE + 2))
def test_crash_at_any_point_of_a_save_resumes_a_consistent_pair(crash_at, tmp_path, monkeypatch):
    out = tmp_path / "mem"
    first = trained(40, seed=1)
    ckpt.save_checkpoint(out, first[0], {"step": 10}, 10, first[1], first[2])
    second = trained(55, seed=2)  # densification changed the number of Gaussians

    calls = {"n": 0}
    real_replace, real_rmtree = os.replace, ckpt.shutil.rmtree

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise Crash
        real_replace(src, dst)

    def rmtree(path, **kw):  # the write after the last rename: deleting the old checkpoint
        if crash_at == WRITES_PER_SAVE + 1:
            raise Crash
        real_rmtree(path, **kw)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(ckpt.shutil, "rmtree", rmtree)
    with pytest.raises(Crash):
        ckpt.save_checkpoint(out, second[0], {"step": 20}, 20, second[1], second[2])
    monkeypatch.undo()

    mem, opts, state, step = resume(out)  # no "optimizer state has shape" error
    want_step, want = (10, first) if crash_at <= COMMIT else (20, second)
    assert step == want_step and mem.extra["step"] == want_step
    assert mem.num_gaussians == want[0].num_gaussians
    assert_same_state(opts, want[1], state, want[2])
    if crash_at != WRITES_PER_SAVE:  # between its own two renames the served memory is torn
        Memory.load(out)  # (a CheckpointError for its readers); else the old or the new one

    third = trained(30, seed=3)
    ckpt.save_checkpoint(out, third[0], {"step": 30}, 30, third[1], third[2])
    assert len(list(out.glob("train_state-*"))) == 1
    assert resume(out)[3] == 30 and Memory.load(out).extra["step"] == 30


def test_finished_run_drops_the_state_unless_kept(tmp_path):
    mem, opts, state = trained(40, seed=1)
    ckpt.save_checkpoint(tmp_path / "a", mem, {"step": 50}, 50, opts, state)
    ckpt.save_checkpoint(tmp_path / "a", mem, {"step": 100}, 100, opts, state, finished=True)
    assert list((tmp_path / "a").glob("train_state-*")) == []
    manifest = json.loads((tmp_path / "a" / "train_state.json").read_text())
    assert manifest["finished"] and manifest["step"] == 100 and manifest["checkpoint"] is None
    loaded, fresh, st, step = resume(tmp_path / "a")
    assert step == 100 and all(not o.state for o in fresh.values())  # nothing restored
    assert st["grad2d"] is None

    ckpt.save_checkpoint(tmp_path / "b", mem, {}, 100, opts, state, finished=True, keep_state=True)
    assert len(list((tmp_path / "b").glob("train_state-*"))) == 1
    _, kept, st, step = resume(tmp_path / "b")
    assert step == 100
    assert_same_state(kept, opts, st, state)


def test_version_1_state_still_resumes(tmp_path):
    """Folders written before checkpoints were one unit: train_state.* beside the memory."""
    mem, opts, state = trained(40, seed=1)
    mem.save(tmp_path)
    tensors = {f"strategy.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for k, opt in opts.items():
        (p,) = opt.param_groups[0]["params"]
        for name in ("exp_avg", "exp_avg_sq", "step"):
            tensors[f"opt.{k}.{name}"] = torch.as_tensor(opt.state[p][name])
    save_file(tensors, str(tmp_path / "train_state.safetensors"))
    meta = {"version": 1, "step": 7, "strategy_scalars": {"scene_scale": 1.5}}
    (tmp_path / "train_state.json").write_text(json.dumps(meta))
    loaded, got, st, step = resume(tmp_path)
    assert step == 7
    assert_same_state(got, opts, st, state)
    ckpt.save_checkpoint(tmp_path, loaded, {}, 8, got, st)
    assert not (tmp_path / "train_state.safetensors").exists()
    assert resume(tmp_path)[3] == 8


@pytest.mark.parametrize(
    "manifest, needle",
    [
        ("{oops", "cannot read training state"),
        ('{"version": 9, "step": 1}', "unknown training-state version 9"),
        ('{"version": 2, "step": "1"}', "step must be an integer"),
        ('{"version": 2, "step": 1, "checkpoint": "../x"}', "bad checkpoint folder"),
        ('{"version": 2, "step": 1, "checkpoint": "train_state-x"}', "which is missing"),
    ],
)
def test_bad_manifest_is_a_checkpoint_error(manifest, needle, tmp_path):
    mem, opts, state = trained(10, seed=1)
    mem.save(tmp_path)
    (tmp_path / "train_state.json").write_text(manifest)
    with pytest.raises(CheckpointError, match=needle):
        resume(tmp_path)


def test_trainer_resumes_after_a_crash_between_memory_and_state(tiny_scene, tmp_path, monkeypatch):
    """The failure of issue 16 item 3: killed between writing the memory and its training
    state while densification changes the number of Gaussians between saves."""
    from m3_core.train import Trainer
    from tests.fixtures.training import tiny_config

    cfg = tiny_config(iterations=40, refine_every=5, save_every=10)
    counts, steps = {}, []

    def record(p):
        if p.stage == "training":
            counts[p.step] = p.num_gaussians
            steps.append(p.step)

    real_write = ckpt.write_memory

    def crash_in_second_save(folder, blob, meta_text):
        real_write(folder, blob, meta_text)
        if json.loads(meta_text)["extra"]["step"] == 20:
            raise Crash  # the memory of step 20 is written, its training state is not

    monkeypatch.setattr(ckpt, "write_memory", crash_in_second_save)
    with pytest.raises(Crash):
        Trainer(tiny_scene, cfg, tmp_path / "m", on_progress=record).run()
    monkeypatch.undo()
    assert counts[10] != counts[20]  # the case that broke: shapes differ between the saves
    steps.clear()
    res = Trainer(tiny_scene, cfg, tmp_path / "m", on_progress=record).run()
    assert steps[0] == 11 and res.step == 40 and not res.cancelled
    assert list((tmp_path / "m").glob("train_state-*")) == []  # finished: state removed
    steps.clear()
    rerun = Trainer(tiny_scene, cfg, tmp_path / "m", on_progress=record).run()
    assert rerun.step == 40 and steps == []  # re-running a finished run trains no step
