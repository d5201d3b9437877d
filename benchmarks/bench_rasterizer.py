"""Benchmark the CPU rasterizer backends of ``m3_core.splat.rasterize``.

Renders D = 16 feature channels + expected depth ("RGB+ED") of random Gaussians in front of one
camera and times forward and forward+backward (loss = sum of all outputs) per backend:
"numba" (compiled kernel), "torch" (pure-torch tile twin) and "dense" (float64 brute-force
reference, only where its [pixels x Gaussians] work fits: 5k Gaussians at 160x120).
Each number is the median of ``--repeats`` runs after one warm-up (which also JIT-compiles);
the dense reference runs once. Threads: torch's and numba's defaults, or ``--threads``.
"cpu ms" is the process CPU time of fwd+bwd (all threads): on a shared, overloaded machine it
is a steadier figure than wall time (run with ``--threads 1`` to make it the pure work).
On a shared machine also set ``OMP_WAIT_POLICY=PASSIVE`` (before Python starts): torch's
OpenMP threads otherwise spin-wait, measured 5-9x more CPU and wall time under load.

    python benchmarks/bench_rasterizer.py [--repeats 3] [--plot out.png] [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from m3_core.splat import rasterize

CASES = [(5_000, 160, 120), (50_000, 640, 480)]
DENSE_MAX_PAIRS = 200_000_000  # pixels x Gaussians the dense reference may take on
N_FEATURES = 16


def make_scene(n: int, width: int, height: int, seed: int = 0) -> dict:
    """n Gaussians spread over the view frustum between z = 3 and z = 5."""
    g = torch.Generator().manual_seed(seed)
    f = 0.8 * width
    z = 3.0 + 2.0 * torch.rand(n, generator=g)
    u = (torch.rand(n, generator=g) - 0.5) * width / f * 1.1
    v = (torch.rand(n, generator=g) - 0.5) * height / f * 1.1
    side = (4.0 * (width / f) * (height / f) / n) ** 0.5  # mean spacing at z = 4
    return {
        "means": torch.stack([u * z, v * z, z], dim=-1),
        "quats": torch.randn(n, 4, generator=g),
        "scales": (0.3 + torch.rand(n, 3, generator=g)) * side * 2.0,  # mean alpha ~0.9
        "opacities": 0.05 + 0.9 * torch.rand(n, generator=g),
        "colors": torch.rand(n, N_FEATURES, generator=g),
        "viewmats": torch.eye(4)[None],
        "Ks": torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]]),
        "width": width,
        "height": height,
    }


def time_backend(
    sc: dict, backend: str, repeats: int, warmup: bool = True
) -> tuple[float, float, float, float]:
    """Median forward, forward+backward and fwd+bwd process-CPU seconds, and mean alpha."""
    keys = ("means", "quats", "scales", "opacities", "colors")
    fwd, full, cpu, cover = [], [], [], 0.0
    for i in range(repeats + int(warmup)):
        leaves = [sc[k].clone().requires_grad_() for k in keys]
        c0, t0 = time.process_time(), time.perf_counter()
        out, alpha, _ = rasterize(
            *leaves, sc["viewmats"], sc["Ks"], sc["width"], sc["height"],
            render_mode="RGB+ED", backend=backend,
        )  # fmt: skip
        t1 = time.perf_counter()
        (out.sum() + alpha.sum()).backward()
        t2, c2 = time.perf_counter(), time.process_time()
        if i >= int(warmup):  # the first run is the warm-up (and JIT compile)
            fwd.append(t1 - t0)
            full.append(t2 - t0)
            cpu.append(c2 - c0)
        cover = float(alpha.detach().mean())
    med = statistics.median
    return med(fwd), med(full), med(cpu), cover


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--plot", default=None, help="save a bar chart to this PNG")
    ap.add_argument("--quick", action="store_true", help="only the small case")
    ap.add_argument("--threads", type=int, default=None, help="torch and numba threads")
    args = ap.parse_args(argv)
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(
        f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, load avg: {load}, "
        f"OMP_WAIT_POLICY: {policy}"
    )
    header = f"{'backend':8} {'N':>7} {'resolution':>10} {'D':>5} {'fwd ms':>9} "
    header += f"{'fwd+bwd ms':>11} {'/ numba':>8} {'cpu ms':>8} {'alpha':>6}"
    print(header)
    rows = []
    for n, w, h in CASES[:1] if args.quick else CASES:
        sc = make_scene(n, w, h)
        base = None
        for backend in ("numba", "torch", "dense"):
            if backend == "dense" and n * w * h > DENSE_MAX_PAIRS:
                print(f"{'dense':8} {n:>7} {f'{w}x{h}':>10}   skipped: {n * w * h:.1e} "
                      "pixel-Gaussian pairs do not fit in memory/time")  # fmt: skip
                continue
            # the dense reference is timed once, without warm-up (it has nothing to compile)
            reps = 1 if backend == "dense" else args.repeats
            f, fb, cpu, cover = time_backend(sc, backend, reps, warmup=backend != "dense")
            base = fb if backend == "numba" else base
            rows.append((backend, n, f"{w}x{h}", f * 1e3, fb * 1e3))
            print(
                f"{backend:8} {n:>7} {f'{w}x{h}':>10} {f'{N_FEATURES}+1':>5} {f * 1e3:>9.1f} "
                f"{fb * 1e3:>11.1f} {fb / base:>8.2f} {cpu * 1e3:>8.0f} {cover:>6.3f}"
            )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        labels = [f"{b}\n{n // 1000}k {r}" for b, n, r, _, _ in rows]
        ax.bar(labels, [r[4] for r in rows], label="fwd+bwd")
        ax.bar(labels, [r[3] for r in rows], label="fwd")
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"CPU rasterizer, D={N_FEATURES}+depth, {torch.get_num_threads()} threads")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
