"""Data-parallel training over views (m3_core.train.distributed): the merged densification
statistics equal per-view ones, and two gloo processes under torchrun train the memory one
process trains with the same views per step."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from gsplat.strategy import DefaultStrategy

from m3_core.errors import InvalidInputError
from m3_core.memory import Memory
from m3_core.train import Trainer
from m3_core.train.distributed import DataParallel
from tests.conftest import REPO
from tests.fixtures.training import tiny_config


def _stats(trainer, memory, views, draws, scale: float, merged: bool) -> dict:
    """DefaultStrategy's grad2d / count after one step's views (no refinement at step 0)."""
    strategy = DefaultStrategy(refine_start_iter=100)
    state = strategy.initialize_state(scene_scale=1.0)
    metas = []
    for i, d in zip(views, draws):
        loss, out, _ = trainer._step_loss(memory, i, 0, d)
        strategy.step_pre_backward(memory.gaussians, {}, state, 0, out.meta)
        (loss * scale).backward()
        if not merged:  # one camera per update, as with a batch of one
            strategy.step_post_backward(memory.gaussians, {}, state, 0, out.meta)
        metas.append(out.meta)
    if merged:
        info = DataParallel().merged_info(metas, len(views))
        strategy.step_post_backward(memory.gaussians, {}, state, 0, info)
    for param in [*memory.gaussians.values(), *memory.projections.values()]:
        param.grad = None
    return state


def test_merged_views_give_the_statistics_of_each_view(tiny_scene, tmp_path):
    trainer = Trainer(tiny_scene, tiny_config(), tmp_path / "m", data_parallel=DataParallel())
    trainer._load_frames()
    memory = trainer._new_memory()
    views = trainer.train_ids[:3]
    draws = [trainer._draw(memory) for _ in views]
    each = _stats(trainer, memory, views, draws, 1.0, merged=False)
    merged = _stats(trainer, memory, views, draws, 1.0 / 3, merged=True)  # the batch mean
    assert float(each["count"].sum()) > 100  # the views see the Gaussians
    torch.testing.assert_close(merged["count"], each["count"], rtol=0, atol=0)
    torch.testing.assert_close(merged["grad2d"], each["grad2d"], rtol=1e-5, atol=1e-9)


def test_views_per_step_must_split_evenly_over_the_processes(tiny_scene, tmp_path):
    with pytest.raises(InvalidInputError, match="multiple of the 2"):
        DataParallel(rank=1, world=2).slots(3)
    assert DataParallel(rank=1, world=2).slots(4) == range(2, 4)
    with pytest.raises(InvalidInputError, match="views_per_step"):
        tiny_config(views_per_step=0)


def test_two_gloo_processes_train_what_one_process_trains(tiny_scene, tmp_path):
    """24 steps with a refinement at step 16. Measured bitwise equal (a two-term float sum
    is the same in either order); the tolerance only allows for reductions that a BLAS may
    split differently. The Gaussian count (densification decisions) must match exactly."""
    iterations, views = 24, 2
    cfg = tiny_config(iterations=iterations, refine_every=8, views_per_step=views, device="cpu")
    probe = Trainer(tiny_scene, cfg, tmp_path / "probe", data_parallel=DataParallel())
    probe._load_frames()
    initial = probe._new_memory().num_gaussians
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank
    try:
        one = Trainer(tiny_scene, cfg, tmp_path / "one", data_parallel=DataParallel()).run()
    finally:
        torch.set_num_threads(threads)
    one = Memory.load(tmp_path / "one")  # as saved, like the other
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(REPO / "tests/core/train/ddp_train.py"), str(tiny_scene.root),
           str(tmp_path / "two"), str(iterations), str(views)]  # fmt: skip
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    two = Memory.load(tmp_path / "two")
    assert one.num_gaussians != initial  # densification ran
    assert two.num_gaussians == one.num_gaussians
    for key, value in one.gaussians.items():
        torch.testing.assert_close(two.gaussians[key], value.detach(), rtol=1e-5, atol=1e-6)
    for name, proj in one.projections.items():
        torch.testing.assert_close(two.projections[name], proj.detach(), rtol=1e-5, atol=1e-6)


def test_m3_train_under_torchrun_equals_one_process(tiny_scene, tmp_path):
    """The user's command: ``torchrun --nproc_per_node 2 -m m3_core.cli.main train ...`` (one
    view per process) trains what ``m3 train ... --views-per-step 2`` trains alone."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    args = ["train", str(tiny_scene.root), "--features", "labels", "--preset", "small",
            "--iterations", "6", "--device", "cpu"]  # fmt: skip
    alone = [sys.executable, "-m", "m3_core.cli.main", *args, "--out", str(tmp_path / "one"),
             "--views-per-step", "2"]  # fmt: skip
    ranks = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             "2", "-m", "m3_core.cli.main", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    for cmd in (alone, ranks):
        res = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.count('"memory"') == 1  # one summary: rank 0's
    one, two = Memory.load(tmp_path / "one"), Memory.load(tmp_path / "two")
    for key, value in one.gaussians.items():
        torch.testing.assert_close(two.gaussians[key], value, rtol=1e-5, atol=1e-6)
