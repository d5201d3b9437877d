"""Training configuration (saved, resolved, with every memory as ``train_config.json``).

Defaults follow M3 / 3DGS (``../shared/docs/m3.md``): 30k iterations, standard 3DGS learning
rates, queries 5e-4, Adam eps 1e-15, densification every 100 steps from 500 to 15k with
gsplat's ``DefaultStrategy``, opacity reset every 3000, every 8th image held out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from m3_core.errors import InvalidInputError

# Per-family defaults (M3's released code): query channels and PSC threshold. A feature
# folder name matches a family by prefix ("clip_vitl14" -> "clip"); unknown names get the
# fallback. Override per feature with "name:channels:threshold" on the command line.
FAMILY_DEFAULTS: dict[str, tuple[int, float]] = {
    "clip": (16, 0.80),
    "siglip": (32, 0.85),
    "dinov2": (32, 0.75),
    "seem": (16, 0.80),
    "llama3": (32, 1.0),
    "llamav": (32, 0.60),
    "effnet": (16, 0.80),
    "labels": (8, 0.95),
}
FALLBACK_FAMILY = (16, 0.80)


@dataclass
class FeatureSpec:
    """A feature source to distil: its folder name under DATA/features and its settings."""

    name: str
    query_channels: int | None = None  # None: the family default
    psc_threshold: float | None = None  # None: the family default

    @staticmethod
    def parse(text: str) -> FeatureSpec:
        """Parse ``name[:channels[:threshold]]``."""
        parts = [p.strip() for p in text.split(":")]
        if not parts[0] or len(parts) > 3:
            raise InvalidInputError(f"bad feature spec {text!r}: use name[:channels[:threshold]]")
        try:
            ch = int(parts[1]) if len(parts) > 1 and parts[1] else None
            th = float(parts[2]) if len(parts) > 2 and parts[2] else None
        except ValueError as exc:
            raise InvalidInputError(f"bad feature spec {text!r}: {exc}") from None
        return FeatureSpec(parts[0], ch, th)

    def resolved(self) -> tuple[int, float]:
        family = next((v for k, v in FAMILY_DEFAULTS.items() if self.name.startswith(k)), None)
        ch, th = family or FALLBACK_FAMILY
        return (self.query_channels or ch, self.psc_threshold or th)


@dataclass
class OptimConfig:
    means_lr: float = 1.6e-4  # x scene extent, decays exponentially to means_lr_final
    means_lr_final: float = 1.6e-6
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    opacities_lr: float = 5e-2
    scales_lr: float = 5e-3
    quats_lr: float = 1e-3
    queries_lr: float = 5e-4
    projections_lr: float = 1e-3  # only when MemoryConfig.train_projection
    eps: float = 1e-15


@dataclass
class DensifyConfig:
    """Arguments of ``gsplat.DefaultStrategy`` (same names)."""

    prune_opa: float = 0.005
    grow_grad2d: float = 2e-4
    grow_scale3d: float = 0.01
    prune_scale3d: float = 0.1
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    reset_every: int = 3000
    refine_every: int = 100


@dataclass
class TrainConfig:
    features: list[FeatureSpec] = field(default_factory=list)
    iterations: int = 30_000
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    max_image_size: tuple[int, int] = (980, 720)  # images are downscaled to fit (w, h)
    sh_degree: int = 3
    sh_degree_interval: int = 1000  # one more SH band every this many steps
    ssim_lambda: float = 0.2  # L = (1 - l) L1 + l (1 - SSIM)
    feature_weight: float = 0.5
    feature_samples: int = 2000  # pixels per model per image
    # views per step (the loss is their mean); under torchrun split over the processes
    views_per_step: int = 1
    depth_weight: float = 0.0  # L1 on expected depth where the dataset has depth; 0 = off
    random_background: bool = False
    detach_query_geometry: bool = True  # feature loss trains queries only (released M3)
    # released M3 keeps W_m frozen at N(0, 1); training it measured better on the synthetic rooms
    # (1000 steps, 60 frames: 1-cos 0.0090 vs 0.0105, MSE 0.00136 vs 0.00171, same time)
    train_projection: bool = True
    gma_temperature: float = 0.05
    # GMA's d-wide products during training (the serving decode stays float32): auto =
    # bfloat16 on a CPU with AVX512-BF16 / AMX (m3_core.memory.gma.fast_matmul_dtype), else
    # float32; fast_step False always uses float32 (the slow twin)
    gma_matmul: str = "auto"  # auto | float32 | bfloat16
    init_points: int = 100_000  # cap on initial Gaussians (depth/COLMAP/random)
    init_opacity: float = 0.1
    psc_max_inputs: int | None = 200_000  # random subsample before Algorithm 1 (O(n^2))
    # bank rows per model: above it the PSC threshold is lowered until the bank fits
    # (m3_core.memory.psc_cap); noisy features otherwise keep most rows (13.7k of 18k)
    psc_max_rows: int | None = 2048
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    save_every: int = 2000  # resumable checkpoint period (steps); 0 = only at the end
    keep_train_state: bool = False  # keep the optimizer state once finished (to train on later)
    eval_every: int = 0  # test-view PSNR period for progress reports; 0 = only at the end
    backend: str = "auto"  # rasterizer backend
    # one render pass, compiled projection + binning, separable SSIM, fused Adam, grid_sample
    # feature sampling; False: their slow twins (the "before" of benchmarks/bench_training.py)
    fast_step: bool = True
    preset: str = ""  # how the schedule was chosen (saved with the memory); "" = by hand

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise InvalidInputError("iterations must be >= 0")
        if self.feature_samples <= 0:
            raise InvalidInputError("feature_samples must be positive")
        if self.views_per_step < 1:
            raise InvalidInputError("views_per_step must be >= 1")
        if self.gma_matmul not in ("auto", "float32", "bfloat16"):
            raise InvalidInputError(
                f"gma_matmul must be auto, float32 or bfloat16, got {self.gma_matmul!r}"
            )
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"duplicate features {names}")

    @staticmethod
    def small_scene(**overrides) -> TrainConfig:
        """A CPU-friendly schedule for small scenes (a few minutes on 2 cores)."""
        base = dict(
            iterations=1000,  # 60 frames at 160x120: ~3 min on 2 cores, 26 dB (bench_training)
            sh_degree=1,
            sh_degree_interval=500,
            depth_weight=0.1,
            init_points=20_000,
            # a higher growth threshold than the paper's 2e-4: at 160x120 screen-space gradients
            # are large and the paper's value grew 20k Gaussians to 390k (1 s per step on CPU)
            densify=DensifyConfig(
                grow_grad2d=6e-4,
                refine_start_iter=300,
                refine_stop_iter=800,
                reset_every=100_000,
                refine_every=100,
            ),
            save_every=250,
        )
        base.update(overrides)
        return TrainConfig(**base)

    @staticmethod
    def sized_for(on: str, n_frames: int, width: int, height: int, **overrides) -> TrainConfig:
        """The default of ``m3 train`` without ``--preset``: a schedule sized to the device
        type ``on`` ("cpu" | "cuda") and the dataset (:func:`sized_schedule`); ``overrides``
        (``device`` among them: the one to train on) win over it."""
        base, why = sized_schedule(on, n_frames, width, height)
        mine = [f"{k} {overrides[k]}" for k in ("iterations", "init_points") if k in overrides]
        if mine:
            why += f" (given: {', '.join(mine)})"
        base.update(overrides)
        base.setdefault("preset", why)
        return TrainConfig(**base)


SMALL_PIXELS = 160 * 120  # the image size the small preset was tuned on (bench_training)


def sized_schedule(device: str, n_frames: int, width: int, height: int) -> tuple[dict, str]:
    """(TrainConfig fields, one-line reason) for ``n_frames`` training images of width x height
    on ``device`` ("cpu", "cuda", "cuda:N"; resolve "auto" first). Pure: no I/O.

    - CUDA: the paper schedule (30k steps, up to 100k initial Gaussians): minutes on a GPU.
    - CPU: the small preset's schedule, scaled. Steps: 17 per training frame (the small
      preset: 1000 for 60 frames), rounded up to 100, within [1000, 5000]. Initial Gaussians:
      20k at 160x120, growing with the square root of the pixel count, within [20k, 60k].
      Densification from 30 % to 80 % of the steps, a checkpoint every quarter.
    """
    if n_frames < 1 or width < 1 or height < 1:
        raise InvalidInputError(f"cannot size a schedule for {n_frames} frames {width}x{height}")
    scene = f"{n_frames} frames {width}x{height}"
    if str(device).startswith("cuda"):
        return {}, f"auto: {device}, {scene} -> the paper schedule (30000 steps)"
    steps = min(max(-(-17 * n_frames // 100) * 100, 1000), 5000)
    points = int(min(max(20_000 * (width * height / SMALL_PIXELS) ** 0.5, 20_000), 60_000))
    points = -(-points // 1000) * 1000
    fields = dict(
        iterations=steps,
        sh_degree=1,
        sh_degree_interval=steps // 2,
        depth_weight=0.1,
        init_points=points,
        densify=DensifyConfig(
            grow_grad2d=6e-4,  # see small_scene
            refine_start_iter=int(0.3 * steps),
            refine_stop_iter=int(0.8 * steps),
            reset_every=100_000,
            refine_every=100,
        ),
        save_every=max(steps // 4, 100),
    )
    why = f"auto: cpu, {scene} -> {steps} steps, {points} initial Gaussians"
    return fields, why
