"""A PSC bank of bounded size: Algorithm 1 at the largest threshold that keeps <= ``max_rows``.

Ours, not in M3. On noisy features (a ViT's patch grid, blended borders, sensor noise) the
greedy rule at the family threshold keeps most rows as their own component: 18k coarse noisy
16-d label vectors give 13.7k components at theta 0.95, against 12 labels in the room. GMA
then attends over every row at every training step and query (its cost and the bank's bytes
grow with t), while a lower threshold merges only the noise: the same vectors give 1.3k rows
at 0.85 and 485 at 0.8.

:func:`build_psc_capped` keeps M3's rule and its threshold when the bank fits, and otherwise
lowers the threshold in steps of ``step`` (bisection, about log2(theta / step) builds) to the
largest one whose bank has at most ``max_rows`` rows. It returns the threshold used, which the
memory stores as its model's ``psc_threshold`` so that incremental and live growth
(:func:`m3_core.memory.psc.extend_psc`) follow the same rule.
"""

from __future__ import annotations

import torch

from m3_core.errors import InvalidInputError
from m3_core.memory.psc import build_psc, subsample_indices


def build_psc_capped(
    features: torch.Tensor,
    threshold: float,
    max_rows: int | None,
    *,
    step: float = 0.01,
    max_inputs: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(bank [t, d], kept_indices [t] into ``features``, threshold used), t <= ``max_rows``.

    ``max_rows`` None: no cap (plain :func:`build_psc`). ``max_inputs`` subsamples once, so
    every threshold tried sees the same rows. Raises if no threshold >= ``step`` fits (more
    than ``max_rows`` mutually dissimilar directions).
    """
    if max_rows is not None and int(max_rows) < 1:
        raise InvalidInputError(f"max_rows must be >= 1 or None, got {max_rows}")
    if not 0.0 < step < 1.0:
        raise InvalidInputError(f"step must be in (0, 1), got {step}")
    sub = subsample_indices(features.shape[0], max_inputs, generator)
    rows = features if sub is None else features[sub.to(features.device)]

    def build(thr: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        bank, kept = build_psc(rows, thr, generator=generator)
        return bank, (kept if sub is None else sub.to(kept.device)[kept]), thr

    best = build(float(threshold))
    if max_rows is None or best[0].shape[0] <= max_rows:
        return best
    lo, hi, best = 1, int(float(threshold) / step + 1e-9) - 1, None  # threshold - k * step > 0
    while lo <= hi:  # smallest k whose bank fits
        k = (lo + hi) // 2
        trial = build(round(float(threshold) - k * step, 6))
        if trial[0].shape[0] <= max_rows:
            best, hi = trial, k - 1
        else:
            lo = k + 1
    if best is None:
        raise InvalidInputError(
            f"no PSC threshold >= {step} keeps at most {max_rows} rows of these "
            f"{rows.shape[0]} features; raise the cap"
        )
    return best
