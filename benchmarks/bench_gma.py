"""Benchmark Gaussian Memory Attention: the chunked fast path vs its one-expression twin.

Training decodes ``--samples`` rendered query pixels per step (forward + backward); serving
decodes every Gaussian once (forward). Shapes: s query channels, d feature dims, t PSC rows.
Usage::

    python benchmarks/bench_gma.py                       # effnet-like (d 1280) and CLIP (d 768)
    python benchmarks/bench_gma.py --samples 4000 --gaussians 200000
"""

from __future__ import annotations

import argparse
import time

import torch

from m3_core.memory.gma import gma_decode, gma_decode_reference


def ms(repeats: int, fn, *args) -> float:
    fn(*args)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - t) / repeats * 1e3


def train_step(decode, q, p, bank) -> None:
    decode(q, p, bank, 0.05).square().sum().backward()


@torch.no_grad()
def serve(decode, q, p, bank) -> None:
    decode(q, p, bank, 0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000, help="decoded pixels per step")
    ap.add_argument("--gaussians", type=int, default=62000, help="Gaussians decoded to serve")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, tau 0.05")
    print(f"{'s':>3} {'d':>5} {'t':>5} | {'step fast':>10} {'step twin':>10} | "
          f"{'serve fast':>11} {'serve twin':>11}   (ms)")  # fmt: skip
    for s, d, t in ((16, 1280, 925), (16, 768, 2000)):
        q = torch.randn(args.samples, s, requires_grad=True)
        p = torch.randn(s, d, requires_grad=True)
        bank = torch.randn(t, d)
        qs = torch.randn(args.gaussians, s)

        fast = ms(args.repeats, train_step, gma_decode, q, p, bank)
        twin = ms(args.repeats, train_step, gma_decode_reference, q, p, bank)
        serve_fast = ms(1, serve, gma_decode, qs, p, bank)
        serve_twin = ms(1, serve, gma_decode_reference, qs, p, bank)
        print(f"{s:>3} {d:>5} {t:>5} | {fast:>10.1f} {twin:>10.1f} | "
              f"{serve_fast:>11.0f} {serve_twin:>11.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
