"""Benchmark lens undistortion in the collector: remap-table build (once per camera) and the
per-keyframe remap of colour (bilinear) and depth (nearest), per image size and lens model.
Usage::

    python benchmarks/bench_undistort.py                  # 640x480, 1280x720, 1920x1080
    python benchmarks/bench_undistort.py --sizes 640x480 --repeats 50

Times are medians over ``--repeats`` calls (ms); OpenCV uses its own threads
(``cv2.getNumThreads()``, printed).
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from m3_core.data.undistort import LensModel, Rectifier

LENSES = {
    "plumb_bob": (-0.28, 0.09, 0.001, -0.0015, -0.012),
    "equidistant": (0.05, -0.02, 0.004, -0.001),
}
EYE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def median_ms(repeats: int, fn, *args) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1280x720", "1920x1080"])
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} threads")
    print(f"{'size':>10} {'model':>12} {'tables ms':>10} {'rgb ms':>8} {'depth ms':>9}")
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        k = (0.6 * w, 0.0, w / 2, 0.0, 0.6 * w, h / 2, 0.0, 0.0, 1.0)
        rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        depth = rng.uniform(0.3, 5.0, (h, w)).astype(np.float32)
        for model, d in LENSES.items():
            lens = LensModel(model, d, k, EYE, (0.0,) * 12, w, h)
            build = median_ms(max(3, args.repeats // 4), Rectifier, lens)
            rect = Rectifier(lens)
            t_rgb = median_ms(args.repeats, rect.rgb, rgb)
            t_depth = median_ms(args.repeats, rect.depth, depth)
            print(f"{size:>10} {model:>12} {build:>10.1f} {t_rgb:>8.2f} {t_depth:>9.2f}")


if __name__ == "__main__":
    main()
