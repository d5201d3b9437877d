"""The M3 training loop: 3DGS photometric fit + distillation of feature models into queries.

``Trainer(dataset, config, out_dir).run()`` returns a :class:`TrainResult`. Progress goes to an
optional callback (the CLI turns it into tqdm, the ROS action into feedback); ``should_stop``
is polled every step and a stop saves a resumable checkpoint. Running again on the same
``out_dir`` resumes from its checkpoint. Under ``torchrun`` the views of each step are split
over the processes (:mod:`m3_core.train.distributed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from m3_core.config import MemoryConfig, save_json
from m3_core.errors import M3Error
from m3_core.memory.grounding import cameras_to_json
from m3_core.train import checkpoint as ckpt
from m3_core.train.config import TrainConfig
from m3_core.train.distributed import DataParallel
from m3_core.train.index import write_grounding_index
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


def gma_matmul_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    """TrainConfig.gma_matmul -> the dtype of GMA's d-wide products (None: float32)."""
    from m3_core.memory.gma import fast_matmul_dtype

    if choice == "auto":
        return fast_matmul_dtype(device)
    return torch.bfloat16 if choice == "bfloat16" else None


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
        data_parallel: DataParallel | None = None,
    ) -> None:
        self.dataset, self.cfg, self.out_dir = dataset, config, Path(out_dir)
        self.dp = data_parallel or DataParallel.from_env(resolve_device(config.device))
        self.slots = self.dp.slots(config.views_per_step)  # this rank's views of each step
        self.on_progress = (on_progress if self.dp.is_main else None) or (lambda p: None)
        self.should_stop = should_stop or (lambda: False)
        self.device = self.dp.device(resolve_device(config.device))
        self.gma_dtype = gma_matmul_dtype(config.gma_matmul, self.device)
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

        specs, banks = [], {}
        for fspec in self.cfg.features:
            spec = model_spec(fspec, self.targets[fspec.name])
            self.on_progress(Progress("building_psc"))
            train_grids = {i: self.targets[spec.name][i] for i in self.train_ids}
            banks[spec.name], used = build_bank(
                train_grids,
                spec.psc_threshold,
                max_inputs=self.cfg.psc_max_inputs,
                max_rows=self.cfg.psc_max_rows,
                generator=self.gen,
                device=self.device,
            )
            specs.append(replace(spec, psc_threshold=used))  # growth follows it
        mcfg = MemoryConfig(
            models=specs,
            sh_degree=self.cfg.sh_degree,
            gma_temperature=self.cfg.gma_temperature,
            train_projection=self.cfg.train_projection,
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
        memory = Memory.load(ckpt.resume_dir(self.out_dir), self.device)  # the saved pair's
        have, here = memory.world_frame, self.dataset.world_frame
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
    def _draw(self, memory) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """One view's random draws (background, feature sample points per model), in the
        order of one stream that every rank draws in full (:mod:`.distributed`)."""
        bg = (
            torch.rand(3, generator=self.gen).to(self.device)
            if self.cfg.random_background
            else None
        )
        uvs = {
            name: sample_uv(self.cfg.feature_samples, self.gen, self.device)
            for name in memory.layout.names
        }
        return bg, uvs

    def _step_loss(self, memory, i: int, sh_degree: int, draws):
        from m3_core.memory.render import render_gaussians

        cam = self.dataset.frames[i].camera
        gt = self.images[i].to(self.device).float() / 255.0  # [H, W, 3]
        bg, uvs = draws
        fast = self.cfg.fast_step
        out = render_gaussians(
            memory.gaussians,
            cam,
            sh_degree=sh_degree,
            background=bg,
            with_queries=bool(self.cfg.features),
            detach_query_geometry=self.cfg.detach_query_geometry,
            backend=self.cfg.backend,
            one_pass=fast,
            check_values=not fast,  # values: checked when loaded, and the loss every step
            geometry_backend="auto" if fast else "torch",
        )
        loss = photometric_loss(out.rgb, gt, self.cfg.ssim_lambda, fast=fast)
        depth = self.depths.get(i)
        if self.cfg.depth_weight > 0 and depth is not None:
            d = depth.to(self.device)
            ok = d > 0
            if bool(ok.any()):
                loss = loss + self.cfg.depth_weight * (out.depth[ok] - d[ok]).abs().mean()
        mm_dtype = self.gma_dtype if fast else None  # the slow twin decodes in float32
        for name in memory.layout.names:
            fl, _ = feature_loss(
                out.queries[..., memory.layout.slice(name)],
                self.targets[name][i],
                lambda q, n=name: memory.decode(n, q, matmul_dtype=mm_dtype),
                uvs[name],
                fast=fast,
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
        """Train (or resume); the global RNG (densification's random draws) is seeded from
        the config inside and restored after, so every rank draws alike."""
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.cfg.seed)
            return self._run()

    def _run(self) -> TrainResult:
        from gsplat.strategy import DefaultStrategy

        cfg = self.cfg
        self.on_progress(Progress("loading", total=cfg.iterations))
        self._load_frames()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        memory, resume, grown = self._initial_memory()
        bad = [k for k, v in memory.gaussians.items() if not bool(torch.isfinite(v).all())]
        if bad:  # checked once here: the loop's rasterizer calls skip the scan
            from m3_core.errors import InvalidInputError

            raise InvalidInputError(f"memory in {self.out_dir} has non-finite {bad}")
        extent = scene_extent(self.dataset, self.train_ids)
        optimizers = build_optimizers(memory, cfg.optim, extent, fused=cfg.fast_step)
        strategy = DefaultStrategy(**vars(cfg.densify))
        strategy.check_sanity(memory.gaussians, {k: optimizers[k] for k in memory.gaussians})
        state = strategy.initialize_state(scene_scale=extent)
        start = 0
        if resume:
            start = ckpt.load_train_state(self.out_dir, optimizers, state)
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    state[k] = v.to(self.device)
        main = self.dp.is_main  # the one process that writes
        if main:
            save_json(cfg, self.out_dir / "train_config.json")
            self._copy_feature_meta()

        def save(step: int, finished: bool = False) -> None:
            if not main:
                return
            self.on_progress(Progress("saving", step, cfg.iterations))
            frames = [self.dataset.frames[i].name for i in self.train_ids]
            where = {"world_frame": self.dataset.world_frame} if self.dataset.world_frame else {}
            cams = cameras_to_json([self.dataset.frames[i].camera for i in self.train_ids])
            extra = {"step": step, "frames": frames, "cameras": cams, **where, **grown}
            ckpt.save_checkpoint(self.out_dir, memory, extra, step, optimizers, state,
                                 finished=finished, keep_state=cfg.keep_train_state)  # fmt: skip

        t0, step, loss_ema, cancelled = time.perf_counter(), start, float("nan"), False
        train_psnr = float("nan")
        order = torch.randperm(len(self.train_ids), generator=self.gen).tolist()
        batch = cfg.views_per_step
        for step in range(start, cfg.iterations):
            stop, _ = self.dp.step_totals(self.should_stop(), 0.0)
            if stop:
                cancelled = True
                break
            for g in optimizers["means"].param_groups:
                g["lr"] = means_lr_at(cfg.optim, extent, step, cfg.iterations)
            sh = min(step // max(cfg.sh_degree_interval, 1), cfg.sh_degree)
            views = [self.train_ids[order[(step * batch + j) % len(order)]] for j in range(batch)]
            draws = [self._draw(memory) for _ in views]  # every rank draws them all
            metas, loss_sum = [], 0.0
            for j in self.slots:
                loss, out, gt = self._step_loss(memory, views[j], sh, draws[j])
                lv = float(loss.detach())
                if not math.isfinite(lv):  # the rasterizer does not re-check values every step
                    raise M3Error(f"training diverged at step {step + 1}: loss {lv}")
                strategy.step_pre_backward(memory.gaussians, optimizers, state, step, out.meta)
                (loss / batch).backward()  # the batch's mean, one view's graph at a time
                metas.append(out.meta)
                loss_sum += lv
            self.dp.sum_grads(optimizers)
            _, loss_sum = self.dp.step_totals(False, loss_sum)
            lv = loss_sum / batch
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            gauss_opts = {k: optimizers[k] for k in memory.gaussians}
            info = metas[0] if batch == 1 else self.dp.merged_info(metas, batch)
            strategy.step_post_backward(memory.gaussians, gauss_opts, state, step, info)
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
        save(final_step, finished=not cancelled)
        if not cancelled and main:  # lifted queries + fitted relevancy temperatures
            self.on_progress(Progress("indexing", final_step, cfg.iterations))
            write_grounding_index(
                memory, self.dataset, self.train_ids, self.targets, self.out_dir,
                backend=cfg.backend,
            )  # fmt: skip
        metrics = {} if cancelled else {"test_psnr": self.evaluate_psnr(memory)}
        test_psnr = metrics.get("test_psnr", math.nan)
        self.on_progress(
            Progress(
                "done", final_step, cfg.iterations, loss_ema, test_psnr, memory.num_gaussians, 0.0
            )
        )
        return TrainResult(memory, self.out_dir, final_step, cancelled, metrics)
