"""Benchmark PSC construction (Algorithm 1): time, bank size and peak memory.

Synthetic "patch features": ``--clusters`` random centres in d dimensions, each row a centre
plus Gaussian noise of a per-row random scale in [0, ``--noise``] (so cosines to the centre
spread over roughly 0.5..1, like patches of the same object). Usage::

    python benchmarks/bench_psc.py                      # n = 10k, 50k, 100k; d = 768
    python benchmarks/bench_psc.py --sizes 2000 --reference-size 2000 --device cuda

Peak memory is the extra resident memory of the process during the call on CPU (Linux
VmHWM, reset through /proc/self/clear_refs) or ``torch.cuda.max_memory_allocated`` on CUDA.
The reference (plain loop) runs on the ``--reference-size`` set only, and the table says
whether it kept exactly the same rows.
"""

from __future__ import annotations

import argparse
import time
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--reference-size", type=int, default=None, help="default: smallest size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    ref_n = args.reference_size or min(args.sizes)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"d={args.dim}, chunk={args.chunk_size}, clusters={args.clusters}, noise={args.noise}"
    )
    header = f"{'method':<10}{'n':>9}{'theta':>7}{'time s':>10}{'bank':>9}{'peak MiB':>10}"
    print(header + "  same as reference")
    print("-" * (len(header) + 19))
    sizes = sorted(set(args.sizes) | {ref_n})
    for n in sizes:
        feats = make_features(n, args.dim, args.clusters, args.noise, args.seed).to(device)
        for theta in args.thresholds:
            runs = [
                ("build_psc", lambda f=feats, t=theta: build_psc(f, t, chunk_size=args.chunk_size))
            ]
            if n == ref_n:
                runs.append(("reference", lambda f=feats, t=theta: build_psc_reference(f, t)))
            kept = {}
            for name, fn in runs:
                if name == "build_psc" and n not in args.sizes:
                    continue
                with PeakMemory(device) as mem:
                    t0 = time.perf_counter()
                    _, idx = fn()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    dt = time.perf_counter() - t0
                kept[name] = idx
                same = ""
                if name == "reference" and "build_psc" in kept:
                    same = "yes" if torch.equal(kept["build_psc"], idx) else "NO"
                print(
                    f"{name:<10}{n:>9,}{theta:>7.2f}{dt:>10.2f}{idx.numel():>9,}"
                    f"{_mib(mem.peak):>10}  {same}",
                    flush=True,
                )
        del feats
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
