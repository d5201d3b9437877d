"""Which memory of a recording to serve: the trained one or the live snapshot (issue 18.2).

Full training replaces the live memory only where it measures better, and a live snapshot
never silently replaces a trained memory: both are scored on the same **held-out keyframes**
and the better one is served.

* Held out: the recording's test views (every 8th keyframe by name, :mod:`m3_core.data.split`,
  which training never trains on) are not folded into the live memory either. Of those, the
  ones in neither memory's frame list (the trained memory's ``extra["frames"]``, the live
  memory's folded keyframes: a view folded before it became a test view, when it was the
  only keyframe, is excluded) are scored, at most ``limit``, the most recent ones
  (:func:`held_out_frames`): where the walk has gone since training, the live memory may know
  more.
* Measure (:class:`Score`, from :func:`m3_core.train.evaluate.evaluate`): what the memory
  servers answer with is features, so the rule compares the mean over the features both
  memories have of the feature distance 1 - cos (decoded vs real features on the feature
  grid; lower is better); with no feature in common, test-view PSNR (higher is better).
* Rule (:func:`choose`): live only when it is clearly better on that measure: 1 - cos at least
  ``COS_MARGIN`` (2 %) lower than the trained memory's, or PSNR ``PSNR_MARGIN`` (0.5 dB)
  higher. A few held-out views measure with noise, and within it the trained memory (M3's
  full fit: far better colour and depth, e.g. 26.9 vs 16.8 dB on the demo's held-out views at
  a 1 - cos 0.3% apart) is the one to keep. Ties, no held-out keyframe, or a measure that is
  not finite keep the trained memory. With no trained memory the live snapshot is served
  (answers during the walk).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from m3_core.errors import InvalidInputError

LIVE, TRAINED = "live", "trained"
COS_MARGIN = 0.02  # live's 1 - cos must be below (1 - COS_MARGIN) x the trained memory's
PSNR_MARGIN = 0.5  # dB: live's PSNR must be above the trained memory's + this


@dataclass(frozen=True)
class Score:
    """A memory measured on held-out keyframes: ``frames`` rendered, mean ``psnr`` (dB), and
    per feature the mean 1 - cos of decoded vs real features (only features with maps)."""

    frames: int
    psnr: float = math.nan
    cos_dist: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: Mapping) -> Score:
        """From the dict :func:`~m3_core.train.evaluate.evaluate` returns."""
        feats = metrics.get("features", {})
        return cls(
            int(metrics.get("frames", 0)),
            float(metrics.get("psnr", math.nan)),
            {n: float(v["cos_dist"]) for n, v in feats.items()},
        )


def score_memory(memory, dataset, indices: Sequence[int], *, backend: str = "auto") -> Score:
    """``memory`` rendered at frames ``indices`` of ``dataset`` (features from its store)."""
    from m3_core.train.evaluate import evaluate

    return Score.from_metrics(evaluate(memory, dataset, list(indices), backend=backend))


@dataclass(frozen=True)
class Decision:
    """Which memory to serve (``LIVE`` or ``TRAINED``), on what measure, both values."""

    serve: str
    reason: str
    measure: str = ""  # "1-cos[labels]" (lower better) | "PSNR" (higher better) | ""
    live: float = math.nan
    trained: float = math.nan
    frames: int = 0

    def __str__(self) -> str:
        if not self.measure:
            return f"serving the {self.serve} memory: {self.reason}"
        return (
            f"serving the {self.serve} memory: {self.measure} live {self.live:.4f} vs trained "
            f"{self.trained:.4f} on {self.frames} held-out keyframes ({self.reason})"
        )


def held_out_frames(
    test_names: Sequence[str],
    trained_frames: Iterable[str],
    live_frames: Iterable[str],
    limit: int,
) -> list[str]:
    """The test views (in recording order) in neither memory's frames: the last ``limit``."""
    if limit < 0:
        raise InvalidInputError(f"held-out keyframe limit must be >= 0, got {limit}")
    seen = set(trained_frames) | set(live_frames)
    names = [n for n in test_names if n not in seen]
    return names[max(len(names) - limit, 0) :]


def choose(
    trained: Score | None,
    live: Score,
    *,
    cos_margin: float = COS_MARGIN,
    psnr_margin: float = PSNR_MARGIN,
) -> Decision:
    """The rule of the module doc."""
    if trained is None:
        return Decision(LIVE, "no trained memory")
    if trained.frames <= 0 or live.frames <= 0:
        return Decision(TRAINED, "no held-out keyframe to compare on")
    shared = sorted(set(trained.cos_dist) & set(live.cos_dist))
    if shared:
        t = sum(trained.cos_dist[n] for n in shared) / len(shared)
        v = sum(live.cos_dist[n] for n in shared) / len(shared)
        measure, live_better = f"1-cos[{','.join(shared)}]", v < (1.0 - cos_margin) * t
    else:
        t, v = trained.psnr, live.psnr
        measure, live_better = "PSNR", v > t + psnr_margin
    frames = min(trained.frames, live.frames)
    if not (math.isfinite(t) and math.isfinite(v)):
        return Decision(TRAINED, "a measure is not finite", measure, v, t, frames)
    if live_better:
        return Decision(LIVE, "live clearly better", measure, v, t, frames)
    return Decision(TRAINED, "live not clearly better", measure, v, t, frames)
