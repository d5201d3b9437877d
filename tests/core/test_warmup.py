"""The set-up's kernel warm-up compiles what the trainer, the live worker and the server use."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

AFTER_WARM_UP = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    from m3_core.warmup import signatures, warm_up

    tmp = Path(tempfile.mkdtemp())
    warmed = warm_up(tmp / "w")
    # other sizes and settings than the warm-up's: a demo-like step, grounding index, serving
    from m3_core.data import make_synthetic_scene
    from m3_core.query import MemoryPredictor
    from m3_core.train import FeatureSpec, TrainConfig, Trainer

    ds = make_synthetic_scene(tmp / "s", num_frames=6, width=64, height=48, feature_stride=4)
    cfg = TrainConfig.small_scene(features=[FeatureSpec("labels")], iterations=2,
                                  init_points=800, device="cpu", save_every=0)
    Trainer(ds, cfg, tmp / "m").run()
    MemoryPredictor.load(tmp / "m").ground("chair")
    print(json.dumps({"warmed": warmed, "after": signatures()}))
    """
)


def test_nothing_compiles_after_the_warm_up():
    """In a fresh process (this one has compiled float64 twins for other tests): after
    ``warm_up`` every kernel has a signature, and training, indexing and grounding at other
    sizes add none, so the first real run after set-up loads machine code instead of
    compiling it."""
    out = subprocess.run(
        [sys.executable, "-c", AFTER_WARM_UP], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(got["warmed"]) >= {"composite_forward", "composite_backward", "bin_tiles"}
    assert all(n >= 1 for n in got["warmed"].values()), got
    assert got["after"] == got["warmed"]


def test_warm_up_command_reports_every_kernel():
    out = subprocess.run(
        [sys.executable, "-m", "m3_core.warmup"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    from m3_core.warmup import compiled_kernels

    assert f"warm-up: {len(compiled_kernels())} CPU kernels" in out.stdout
