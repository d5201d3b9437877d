"""Compile the CPU rasterizer's kernels once, at set-up, instead of in a robot's first minute.

numba compiles each kernel on its first call and caches the machine code beside the source
(``__pycache__``, ``cache=True``); later processes load it in about a second. Without this
step the first run after an install pays the compilation where it hurts: in the demo the
first live keyframe took 16.8 s to fold and the first training step 9 s. ``python -m
m3_core.warmup`` (run by ``scripts/setup.sh``) trains a tiny synthetic room for a few steps,
folds two of its keyframes into a live memory and renders it, on the CPU, which calls every
compiled entry point with the argument types the trainer, the live worker and the memory
server use (:func:`compiled_kernels` lists them; the tests check that nothing new compiles
after it). A second run finds the cache and takes a few seconds.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def compiled_kernels() -> dict[str, object]:
    """name -> numba dispatcher of every compiled entry point (not the inlined helpers)."""
    from numba.core.registry import CPUDispatcher

    from m3_core.splat import _numba_kernels, _numba_projection

    return {
        f.__name__: f
        for mod in (_numba_kernels, _numba_projection)
        for f in vars(mod).values()
        if isinstance(f, CPUDispatcher) and f.targetoptions.get("inline", "never") == "never"
    }


def signatures() -> dict[str, int]:
    """name -> how many argument-type signatures of that kernel this process has compiled or
    loaded from the cache."""
    return {name: len(f.signatures) for name, f in compiled_kernels().items()}


def warm_up(work_dir: str | Path, *, steps: int = 3) -> dict[str, int]:
    """Train, fold and render a tiny room in ``work_dir`` (module doc); returns
    :func:`signatures` after."""
    import torch

    from m3_core.config import MemoryConfig
    from m3_core.data import make_synthetic_scene
    from m3_core.live import LiveMemory, keyframe_from_dataset
    from m3_core.memory.render import render_memory
    from m3_core.train import FeatureSpec, TrainConfig, Trainer
    from m3_core.types import ModelSpec

    root = Path(work_dir)
    dataset = make_synthetic_scene(root / "scene", num_frames=8, width=40, height=30)
    cfg = TrainConfig.small_scene(
        features=[FeatureSpec("labels")], iterations=steps, init_points=500,
        feature_samples=64, device="cpu", save_every=0,
    )  # fmt: skip
    memory = Trainer(dataset, cfg, root / "memory").run().memory
    render_memory(memory, dataset.frames[0].camera, ["labels"], decode=True)
    frames = [keyframe_from_dataset(dataset, i, ["labels"]) for i in dataset.train_indices[:2]]
    dim = int(frames[0].features["labels"].shape[-1])
    live = LiveMemory(MemoryConfig(models=[ModelSpec("labels", dim, 16, 0.95)], sh_degree=0))
    for frame in frames:
        live.add_keyframe(frame)
    with torch.no_grad():
        render_memory(live.snapshot(), dataset.frames[0].camera, ["labels"], decode=True)
    return signatures()


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="m3_warmup_") as tmp:
        sigs = warm_up(tmp)
    missing = [name for name, n in sigs.items() if n == 0]
    took = time.perf_counter() - start
    if missing:
        print(f"warm-up: kernels not compiled: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"warm-up: {len(sigs)} CPU kernels compiled or loaded from the cache in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
