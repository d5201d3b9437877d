"""Data-parallel training over views: torch.distributed, launched with torchrun.

Every step trains on ``views_per_step`` training views (the global batch; the loss is their
mean). With ``torchrun --nproc_per_node P`` each of the P processes (ranks) renders its own
contiguous share of those views and back-propagates ``loss_view / views_per_step``; then

* the parameter gradients are summed over the ranks (one all-reduce, as DDP does), so every
  rank's optimizer takes the same step as one process rendering the whole batch;
* the screen-space gradients and radii of every view are all-gathered into one gsplat
  ``info`` for ``DefaultStrategy.step_post_backward`` (:meth:`DataParallel.merged_info`), so
  the densification statistics, and therefore the clone / split / prune decisions, are the
  same on every rank; its random draws (the split's samples) come from the global RNG, which
  every rank seeds alike;
* a stop request on any rank stops all of them at the same step.

The views and the per-view random draws (background, feature sample points) follow one
stream that every rank draws in full, so P processes train the same memory as one process
with the same ``views_per_step`` (``tests/core/train/test_distributed.py``: equal within
float32 summation-order tolerance). Rank 0 alone writes checkpoints, the memory and its
grounding index, and reports progress. Backend: gloo on CPU, NCCL on CUDA (each rank on
``cuda:LOCAL_RANK``).

For scenes whose Gaussians do not fit one GPU's memory, this is not the tool: it replicates
the Gaussians on every rank. Grendel (Zhao et al., "On Scaling Up 3D Gaussian Splatting
Training", gsplat's ``distributed`` examples) partitions Gaussians and pixels over GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.distributed as dist

from m3_core.errors import InvalidInputError


@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env(device: torch.device) -> DataParallel:
        """The process group torchrun describes (``WORLD_SIZE`` > 1), joined on first use;
        a single process otherwise."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return DataParallel()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return DataParallel(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for a CUDA run, else ``device``."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def slots(self, views_per_step: int) -> range:
        """The positions in the step's batch of views that this rank renders."""
        if views_per_step % self.world:
            raise InvalidInputError(
                f"views_per_step {views_per_step} must be a multiple of the {self.world} "
                "training processes"
            )
        share = views_per_step // self.world
        return range(self.rank * share, (self.rank + 1) * share)

    def sum_grads(self, optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
        """Sum the gradient of every parameter of ``optimizers`` over the ranks (in place). A
        parameter no rank has a gradient for keeps ``grad=None`` (its optimizer skips it, as
        in one process). The parameters are read from the optimizers at each call:
        densification replaces them."""
        if not self.active:
            return
        params = [p for o in optimizers.values() for g in o.param_groups for p in g["params"]]
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        live = [p for p, h in zip(params, has.tolist()) if h]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for dtype in {p.dtype for p in live}:
            grads = [p.grad for p in live if p.dtype == dtype]
            flat = torch.cat([g.reshape(-1) for g in grads])  # one message per dtype
            dist.all_reduce(flat)
            for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(part.view_as(g))

    def step_totals(self, stop: bool, loss_sum: float) -> tuple[bool, float]:
        """(any rank asked to stop, the batch's loss summed over the ranks)."""
        if not self.active:
            return stop, loss_sum
        t = torch.tensor([float(stop), loss_sum], dtype=torch.float64)
        dist.all_reduce(t)
        return bool(t[0] > 0), float(t[1])

    def merged_info(self, metas: list[dict], views_per_step: int) -> dict:
        """One gsplat ``info`` for all ``views_per_step`` views of the step (this rank's
        ``metas`` after backward, all-gathered in batch order). Screen-space gradients and
        radii are normalised per view (each view may have its own size) and ``width`` /
        ``height`` set to 2, so gsplat's scaling by ``width / 2 * n_cameras`` leaves only the
        ``n_cameras`` factor that undoes the batch mean. ``refine_scale2d`` reads the radii
        as fractions of the view's larger side."""
        grads, radii = [], []
        for m in metas:
            g = m["means2d"].grad  # [1, N, 2]
            if g is None:
                raise RuntimeError("merged_info needs each view's means2d gradient")
            scale = torch.tensor([m["width"] / 2.0, m["height"] / 2.0], device=g.device)
            grads.append(g.reshape(-1, g.shape[-1]) * scale)  # [N, 2]
            r = m["radii"].reshape(g.shape[-2], -1).float()  # [N, 2]
            radii.append(r * (2.0 / max(m["width"], m["height"])))
        grad, rad = torch.stack(grads), torch.stack(radii)  # [B_local, N, 2]
        if self.active:
            grad, rad = self._gather(grad), self._gather(rad)  # [views_per_step, N, 2]
        if grad.shape[0] != views_per_step:
            raise RuntimeError(f"merged {grad.shape[0]} views, expected {views_per_step}")
        return {
            "means2d": SimpleNamespace(grad=grad, absgrad=None),
            "radii": rad,
            "gaussian_ids": None,
            "width": 2.0,
            "height": 2.0,
            "n_cameras": views_per_step,
        }

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)
