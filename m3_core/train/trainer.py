"""The M3 training loop: 3DGS photometric fit + distillation of feature models into queries.

``Trainer(dataset, config, out_dir).run()`` returns a :class:`TrainResult`. Progress goes to an
optional callback (the CLI turns it into tqdm, the ROS action into feedback); ``should_stop``
is polled every step and a stop saves a resumable checkpoint. Running again on the same
``out_dir`` resumes from its checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from m3_core.config import MemoryConfig, save_json
from m3_core.train import checkpoint as ckpt
from m3_core.train.config import TrainConfig
from m3_core.train.losses import feature_loss, photometric_loss, psnr, sample_uv
from m3_core.train.optim import build_optimizers, means_lr_at, scene_extent
from m3_core.train.targets import build_bank, load_targets, model_spec


@dataclass
class Progress:
    stage: str  # loading | building_psc | training | saving | done
    step: int = 0
    total: int = 0
    loss: float = float("nan")
    psnr: float = float("nan")
    num_gaussians: int = 0
    eta_s: float = float("nan")


@dataclass
class TrainResult:
    memory: object  # m3_core.memory.Memory
    out_dir: Path
    step: int
    cancelled: bool
    metrics: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    def __init__(
        self,
        dataset,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        incremental: bool = False,
    ) -> None:
        self.dataset, self.cfg, self.out_dir = dataset, config, Path(out_dir)
        self.on_progress = on_progress or (lambda p: None)
        self.should_stop = should_stop or (lambda: False)
        self.device = resolve_device(config.device)
        self.incremental = incremental  # grow an existing memory with new frames
        self.gen = torch.Generator().manual_seed(config.seed)

    # -- set-up -----------------------------------------------------------------------------
    def _load_frames(self) -> None:
        ds = self.dataset
        self.train_ids = list(ds.train_indices)
        self.test_ids = list(ds.test_indices)
        if not self.train_ids:
            from m3_core.errors import InvalidInputError

            raise InvalidInputError(f"dataset {ds.root} has no training frames")
        ids = self.train_ids + self.test_ids
        self.images = {i: (ds.load_image(i) * 255).round().to(torch.uint8) for i in ids}
        self.depths = {i: ds.load_depth(i) for i in self.train_ids}
        self.targets = {s.name: load_targets(ds, s, ids) for s in self.cfg.features}

    def _new_memory(self):
        from m3_core.memory import Memory
        from m3_core.splat import init_gaussians

        from .init import initial_points

        specs = [model_spec(s, self.targets[s.name]) for s in self.cfg.features]
        mcfg = MemoryConfig(
            models=specs,
            sh_degree=self.cfg.sh_degree,
            gma_temperature=self.cfg.gma_temperature,
            train_projection=self.cfg.train_projection,
        )
        banks = {}
        for spec in specs:
            self.on_progress(Progress("building_psc"))
            train_grids = {i: self.targets[spec.name][i] for i in self.train_ids}
            banks[spec.name] = build_bank(
                train_grids,
                spec.psc_threshold,
                max_inputs=self.cfg.psc_max_inputs,
                generator=self.gen,
                device=self.device,
            )
        points, colors, self.init_source = initial_points(
            self.dataset, self.train_ids, self.cfg.init_points, self.gen
        )
        params = init_gaussians(
            points,
            colors,
            mcfg.query_dim,
            self.cfg.sh_degree,
            init_opacity=self.cfg.init_opacity,
            generator=self.gen,
        )
        return Memory.create(mcfg, params, banks, seed=self.cfg.seed).to(self.device)

    def _initial_memory(self):
        """(memory, resume?, growth stats): new, resumed from its checkpoint, or grown."""
        from m3_core.errors import InvalidInputError
        from m3_core.memory import Memory

        if not (self.out_dir / "memory.json").exists():
            return self._new_memory(), False, {}
        memory = Memory.load(self.out_dir, self.device)
        have, here = memory.extra.get("world_frame", ""), self.dataset.world_frame
        if have and here and have != here:
            raise InvalidInputError(f"{self.out_dir} is in frame {have!r}, the data in {here!r}")
        seen = set(memory.extra.get("frames", []))
        new_ids = [i for i in self.train_ids if self.dataset.frames[i].name not in seen]
        if not new_ids:  # resume (or re-save a finished run)
            return memory, ckpt.has_train_state(self.out_dir), {}
        if not self.incremental:
            raise InvalidInputError(
                f"{self.out_dir} holds a memory trained on other frames ({len(new_ids)} new "
                "here): update it incrementally, or choose another output folder"
            )
        from m3_core.train.incremental import grow_memory

        self.on_progress(Progress("growing"))
        stats = grow_memory(
            memory,
            self.dataset,
            new_ids,
            self.targets,
            max_new=self.cfg.init_points,
            generator=self.gen,
        )
        return memory, False, {"last_growth": stats}

    # -- one step ---------------------------------------------------------------------------
    def _step_loss(self, memory, i: int, sh_degree: int):
        from m3_core.memory.render import render_gaussians

        cam = self.dataset.frames[i].camera
        gt = self.images[i].to(self.device).float() / 255.0  # [H, W, 3]
        bg = (
            torch.rand(3, generator=self.gen).to(self.device)
            if self.cfg.random_background
            else None
        )
        out = render_gaussians(
            memory.gaussians,
            cam,
            sh_degree=sh_degree,
            background=bg,
            with_queries=bool(self.cfg.features),
            detach_query_geometry=self.cfg.detach_query_geometry,
            backend=self.cfg.backend,
        )
        loss = photometric_loss(out.rgb, gt, self.cfg.ssim_lambda)
        depth = self.depths.get(i)
        if self.cfg.depth_weight > 0 and depth is not None:
            d = depth.to(self.device)
            ok = d > 0
            if bool(ok.any()):
                loss = loss + self.cfg.depth_weight * (out.depth[ok] - d[ok]).abs().mean()
        for name in memory.layout.names:
            uv = sample_uv(self.cfg.feature_samples, self.gen, self.device)
            fl, _ = feature_loss(
                out.queries[..., memory.layout.slice(name)],
                self.targets[name][i],
                lambda q, n=name: memory.decode(n, q),
                uv,
            )
            loss = loss + self.cfg.feature_weight * fl
        return loss, out, gt

    def _copy_feature_meta(self) -> None:
        """Copy each feature's vocabulary.npz / meta.json into MEM/features/<name>/ so the
        memory folder alone answers text queries (no dataset needed on the robot)."""
        from m3_core.io import atomic_write_bytes

        for spec in self.cfg.features:
            src = self.dataset.root / "features" / spec.name
            for fname in ("vocabulary.npz", "meta.json"):
                if (src / fname).exists():
                    dst = self.out_dir / "features" / spec.name / fname
                    atomic_write_bytes(dst, (src / fname).read_bytes())

    @torch.no_grad()
    def evaluate_psnr(self, memory) -> float:
        from m3_core.memory.render import render_gaussians

        ids = self.test_ids or self.train_ids[:1]
        vals = []
        for i in ids:
            out = render_gaussians(
                memory.gaussians,
                self.dataset.frames[i].camera,
                sh_degree=self.cfg.sh_degree,
                with_queries=False,
                backend=self.cfg.backend,
            )
            vals.append(psnr(out.rgb, self.images[i].to(self.device).float() / 255.0))
        return sum(vals) / len(vals)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from gsplat.strategy import DefaultStrategy

        cfg = self.cfg
        self.on_progress(Progress("loading", total=cfg.iterations))
        self._load_frames()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        memory, resume, grown = self._initial_memory()
        extent = scene_extent(self.dataset, self.train_ids)
        optimizers = build_optimizers(memory, cfg.optim, extent)
        strategy = DefaultStrategy(**vars(cfg.densify))
        strategy.check_sanity(memory.gaussians, {k: optimizers[k] for k in memory.gaussians})
        state = strategy.initialize_state(scene_scale=extent)
        start = 0
        if resume:
            start = ckpt.load_train_state(self.out_dir, optimizers, state)
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    state[k] = v.to(self.device)
        save_json(cfg, self.out_dir / "train_config.json")

        self._copy_feature_meta()

        def save(step: int) -> None:
            self.on_progress(Progress("saving", step, cfg.iterations))
            frames = [self.dataset.frames[i].name for i in self.train_ids]
            where = {"world_frame": self.dataset.world_frame} if self.dataset.world_frame else {}
            extra = {"step": step, "frames": frames, **where, **grown}
            memory.save(self.out_dir, extra=extra)
            ckpt.save_train_state(self.out_dir, step, optimizers, state)

        t0, step, loss_ema, cancelled = time.perf_counter(), start, float("nan"), False
        train_psnr = float("nan")
        order = torch.randperm(len(self.train_ids), generator=self.gen).tolist()
        for step in range(start, cfg.iterations):
            if self.should_stop():
                cancelled = True
                break
            for g in optimizers["means"].param_groups:
                g["lr"] = means_lr_at(cfg.optim, extent, step, cfg.iterations)
            i = self.train_ids[order[step % len(order)]]
            sh = min(step // max(cfg.sh_degree_interval, 1), cfg.sh_degree)
            loss, out, gt = self._step_loss(memory, i, sh)
            strategy.step_pre_backward(memory.gaussians, optimizers, state, step, out.meta)
            loss.backward()
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            gauss_opts = {k: optimizers[k] for k in memory.gaussians}
            strategy.step_post_backward(memory.gaussians, gauss_opts, state, step, out.meta)
            lv = float(loss.detach())
            loss_ema = lv if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * lv
            done = step + 1 - start
            eta = (time.perf_counter() - t0) / done * (cfg.iterations - step - 1)
            if step % 10 == 0:  # training-view PSNR of the current step, refreshed every 10
                train_psnr = psnr(out.rgb, gt)
            self.on_progress(
                Progress(
                    "training",
                    step + 1,
                    cfg.iterations,
                    loss_ema,
                    train_psnr,
                    memory.num_gaussians,
                    eta,
                )
            )
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.iterations:
                save(step + 1)
        final_step = step if cancelled else cfg.iterations
        save(final_step)
        metrics = {} if cancelled else {"test_psnr": self.evaluate_psnr(memory)}
        test_psnr = metrics.get("test_psnr", math.nan)
        self.on_progress(
            Progress(
                "done", final_step, cfg.iterations, loss_ema, test_psnr, memory.num_gaussians, 0.0
            )
        )
        return TrainResult(memory, self.out_dir, final_step, cancelled, metrics)
