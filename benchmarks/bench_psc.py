"""Benchmark PSC construction (Algorithm 1): time, bank size and peak memory per method.

Methods: ``clustered`` (build_psc's default: exact k-means prefilter from 4096 rows on),
``dense`` (build_psc with clusters=0: every chunk of unclaimed rows against all n rows, the
algorithm build_psc used before the prefilter) and ``reference`` (the float64 plain loop).
All keep the same rows; the table says so for every size where two of them ran.

Synthetic "patch features": ``--clusters`` random centres in d dimensions, each row a centre
plus Gaussian noise of a per-row random scale in [0, ``--noise``] (so cosines to the centre
spread over roughly 0.7..1, like patches of the same object). Usage::

    python benchmarks/bench_psc.py            # n = 20k (all but the reference) and 100k
    python benchmarks/bench_psc.py --sizes 2000 --reference-max 2000 --device cuda

Peak memory is the extra resident memory of the process during the call on CPU (Linux
VmHWM, reset through /proc/self/clear_refs) or ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from m3_core.memory.psc import build_psc, build_psc_reference


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak extra memory (bytes) of the block; None where it cannot be measured."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to current RSS
            except OSError:
                pass
            self.base = _rss_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            hwm = _rss_kib("VmHWM")
            self.peak = None if hwm is None or self.base is None else (hwm - self.base) * 1024


def make_features(n: int, d: int, clusters: int, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g)  # [k, d]
    assign = torch.randint(0, clusters, (n,), generator=g)  # [n]
    scale = noise * torch.rand(n, 1, generator=g)  # [n, 1]
    return centres[assign] + scale * torch.randn(n, d, generator=g)  # [n, d]


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{max(b, 0) / 2**20:,.0f}"


def _runs(args: argparse.Namespace, n: int, theta: float) -> list[tuple[str, Callable]]:
    runs: list[tuple[str, Callable]] = [("clustered", lambda f: build_psc(f, theta))]
    if n <= args.dense_max:
        runs.append(
            ("dense", lambda f: build_psc(f, theta, clusters=0, chunk_size=args.chunk_size))
        )
    if n <= args.reference_max:
        runs.append(("reference", lambda f: build_psc_reference(f, theta)))
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--chunk-size", type=int, default=4096, help="dense walk rows per chunk")
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--dense-max", type=int, default=20_000, help="largest n for the dense walk")
    p.add_argument("--reference-max", type=int, default=2000, help="largest n for the loop")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"d={args.dim}, clusters={args.clusters}, noise={args.noise}"
    )
    header = f"{'method':<10}{'n':>9}{'theta':>7}{'time s':>10}{'bank':>9}{'peak MiB':>10}"
    print(header + "  same rows as")
    print("-" * (len(header) + 14))
    for n in sorted(set(args.sizes)):
        feats = make_features(n, args.dim, args.clusters, args.noise, args.seed).to(device)
        for theta in args.thresholds:
            kept: dict[str, torch.Tensor] = {}
            for name, fn in _runs(args, n, theta):
                with PeakMemory(device) as mem:
                    t0 = time.perf_counter()
                    _, idx = fn(feats)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    dt = time.perf_counter() - t0
                same = [k for k, v in kept.items() if torch.equal(v, idx)]
                differ = [k for k, v in kept.items() if not torch.equal(v, idx)]
                kept[name] = idx
                note = ", ".join(same) + "".join(f" DIFFERS FROM {k}" for k in differ)
                print(
                    f"{name:<10}{n:>9,}{theta:>7.2f}{dt:>10.2f}{idx.numel():>9,}"
                    f"{_mib(mem.peak):>10}  {note}",
                    flush=True,
                )
        del feats
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
