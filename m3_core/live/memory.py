"""``LiveMemory``: a memory that grows keyframe by keyframe and answers at once (no training).

Per :meth:`LiveMemory.add_keyframe` (see ``Keyframe`` for the input):

1. **PSC banks** grow by the greedy rule (:func:`m3_core.memory.psc.extend_psc`: a keyframe's
   feature joins a bank only if no row is within the model's threshold), up to
   ``max_bank_rows``.
2. **Projections** (ours): W_m [s_m, d_m] spans the top-s_m principal directions of the bank
   (:func:`m3_core.live.fit.principal_projection`) rather than N(0, 1): with frozen W a query
   can only reach W's row space, and this one holds the features. W_m is re-estimated when its
   bank has grown by ``reproject_growth`` since, then every query is re-fitted.
3. **Seeding** (:mod:`m3_core.live.seed`): Gaussians from the depth the memory does not
   explain yet, isotropic at the pixel footprint, coloured from the image.
4. **Lifting** (:mod:`m3_core.live.lift`): one rasterize fwd + bwd adds each Gaussian's
   visibility-weighted feature sums (running sums over keyframes) at ``lift_scale`` times the
   keyframe's resolution.
5. **Queries** (:mod:`m3_core.live.fit`): for every Gaussian this keyframe saw whose lifted
   mass V_m grew by ``refit_growth`` since its last fit (so its lifted feature can have
   moved; new Gaussians always), its query slice of model m is fitted so that GMA decodes to
   its lifted feature S_m / V_m: least squares, then ``fit_steps`` Adam steps for the worst
   fitted (cosine < ``good_cosine``), at most ``fit_budget`` of them per keyframe. When W_m
   changes, every query of model m is fitted again (the worst polished).

:meth:`snapshot` returns a plain :class:`~m3_core.memory.Memory` (copies) that
``MemoryPredictor`` uses unchanged (its ``world_frame`` is the one given to the constructor:
the ROS frame the keyframes' poses are in); :meth:`grounding_index` the matching
:class:`~m3_core.memory.grounding.GroundingIndex` (the fitted queries are already the lifted
ones; visibility = the lifted pixel mass in keyframe pixels); :meth:`save` writes both.
All state lives on the CPU in float32.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from m3_core.config import MemoryConfig
from m3_core.errors import InvalidInputError
from m3_core.live.fit import (
    decode_cosine,
    fit_queries,
    least_squares_queries,
    principal_projection,
)
from m3_core.live.keyframe import Keyframe
from m3_core.live.lift import lift, seed_maps, split_sums
from m3_core.live.seed import seed_gaussians, unexplained_mask
from m3_core.memory.layout import ChannelLayout
from m3_core.memory.memory import GAUSSIAN_KEYS, check_world_frame


@dataclass
class LiveConfig:
    """Settings of :class:`LiveMemory` (module doc)."""

    seed_stride: int = 6  # pixels between seeds (at the keyframe's resolution)
    seed_scale: float = 0.4  # sigma = seed_scale * stride * depth / focal (module doc)
    seed_opacity: float = 0.9
    alpha_threshold: float = 0.5  # unexplained: rendered alpha below this ...
    depth_tolerance: float = 0.1  # ... or |depth - measured| > this * measured
    max_gaussians: int = 300_000
    lift_scale: float = 0.5  # lifting render resolution / keyframe resolution
    max_bank_rows: int = 16_384  # per model; later features are not added beyond it
    reproject_growth: float = 1.25  # re-estimate W_m when its bank grew by this factor
    refit_growth: float = 1.25  # refit a seen Gaussian once its lifted mass grew this much
    fit_steps: int = 3
    fit_lr: float = 0.1
    fit_budget: int = 1000  # Gaussians polished with Adam per keyframe and model
    fit_topk: int = 32  # bank rows in each polished query's softmax (fit.sparse_gma)
    good_cosine: float = 0.97  # least-squares fits at least this good are not polished
    seed: int = 0  # random projection rows (s_m > d_m) and the Gaussian cap's subsample

    def __post_init__(self) -> None:
        if self.seed_stride < 1 or self.max_gaussians < 0 or self.max_bank_rows < 1:
            raise InvalidInputError("seed_stride, max_bank_rows >= 1 and max_gaussians >= 0")
        if not (0 < self.seed_opacity < 1 and self.seed_scale > 0 and 0 < self.lift_scale <= 1):
            raise InvalidInputError("seed_opacity in (0, 1), seed_scale > 0, lift_scale in (0, 1]")
        if self.fit_steps < 0 or self.fit_budget < 0 or self.fit_topk < 1:
            raise InvalidInputError("fit_steps, fit_budget >= 0 and fit_topk >= 1")
        if self.reproject_growth < 1 or self.refit_growth < 1:
            raise InvalidInputError("reproject_growth and refit_growth must be >= 1")


class LiveMemory:
    """A memory built keyframe by keyframe (module doc)."""

    def __init__(
        self, config: MemoryConfig, live: LiveConfig | None = None, *, world_frame: str = ""
    ) -> None:
        if not isinstance(config, MemoryConfig) or not config.models:
            raise InvalidInputError("LiveMemory needs a MemoryConfig with at least one model")
        self.config = config
        self.world_frame: str = check_world_frame(world_frame)  # "" unknown (Memory's rule)
        self.live = live or LiveConfig()
        self.layout = ChannelLayout.from_specs(config.models)
        self.specs = {m.name: m for m in config.models}
        k = (config.sh_degree + 1) ** 2
        q = config.query_dim
        shapes = {"means": (3,), "scales": (3,), "quats": (4,), "opacities": (),
                  "sh0": (1, 3), "shN": (k - 1, 3), "queries": (q,)}  # fmt: skip
        self.params: dict[str, torch.Tensor] = {
            key: torch.zeros(0, *shapes[key]) for key in GAUSSIAN_KEYS
        }
        self.sums = {m.name: torch.zeros(0, m.dim) for m in config.models}  # S_m [N, d_m]
        self.masses = {m.name: torch.zeros(0) for m in config.models}  # V_m [N]
        self.fit_cosine = {m.name: torch.zeros(0) for m in config.models}  # [N] (-2: unknown)
        self.fit_mass = {m.name: torch.zeros(0) for m in config.models}  # V_m at the last fit
        self.visibility = torch.zeros(0)  # [N] pixel mass at the lifting resolution
        self.banks = {m.name: torch.zeros(0, m.dim) for m in config.models}  # [t_m, d_m]
        self.projections: dict[str, torch.Tensor] = {}  # name -> W_m [s_m, d_m]
        self._rows_at_projection: dict[str, int] = {}
        self.cameras: list = []
        self.frames: list[str] = []
        self.version = 0  # bumped by every update (a snapshot's "live_version")
        self._gen = torch.Generator().manual_seed(self.live.seed)

    @property
    def num_gaussians(self) -> int:
        return int(self.params["means"].shape[0])

    # -- one keyframe ------------------------------------------------------------------------
    @torch.no_grad()
    def add_keyframe(self, frame: Keyframe) -> dict[str, Any]:
        """Fold one keyframe in (module doc); returns stats (counts and seconds per stage)."""
        if not isinstance(frame, Keyframe):
            raise InvalidInputError(f"add_keyframe needs a Keyframe, got {type(frame).__name__}")
        for name, spec in self.specs.items():
            grid = frame.features.get(name)
            if grid is None or grid.shape[2] != spec.dim:
                got = None if grid is None else tuple(grid.shape)
                raise InvalidInputError(f"keyframe needs feature {name!r} [h, w, {spec.dim}], "
                                        f"got {got}")  # fmt: skip
        stats: dict[str, Any] = {"frame": frame.name}
        clock = time.perf_counter()

        def lap(key: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            stats[key + "_s"] = now - clock
            clock = now

        refit_all = self._grow_banks(frame, stats)
        lap("psc")
        stats["gaussians_added"] = self._seed(frame)
        lap("seed")
        seen = self._lift(frame)
        lap("lift")
        stats["fitted"], stats["polished"] = self._fit(seen, refit_all)
        lap("fit")
        self.cameras.append(frame.camera)
        self.frames.append(frame.name or f"keyframe_{len(self.frames):05d}")
        self.version += 1
        stats["gaussians"] = self.num_gaussians
        stats["bank_rows"] = {n: int(b.shape[0]) for n, b in self.banks.items()}
        return stats

    def _grow_banks(self, frame: Keyframe, stats: dict) -> set[str]:
        """Extend the PSC banks; returns the models whose projection was re-estimated."""
        from m3_core.memory.psc import collect_features, extend_psc

        changed = set()
        added = {}
        for name, spec in self.specs.items():
            bank = self.banks[name]
            room = self.live.max_bank_rows - bank.shape[0]
            feats = collect_features([frame.features[name].float()])  # [n, d]
            if room > 0 and feats.shape[0]:
                grown, idx = extend_psc(bank, feats, spec.psc_threshold)
                self.banks[name] = grown[: self.live.max_bank_rows]
            added[name] = int(self.banks[name].shape[0] - bank.shape[0])
            rows = self.banks[name].shape[0]
            last = self._rows_at_projection.get(name, 0)
            if rows and (last == 0 or rows >= self.live.reproject_growth * last):
                self.projections[name] = principal_projection(
                    self.banks[name], spec.query_channels, generator=self._gen
                )
                self._rows_at_projection[name] = rows
                changed.add(name)
        stats["psc_added"] = added
        return changed

    def _seed(self, frame: Keyframe) -> int:
        cfg = self.live
        room = cfg.max_gaussians - self.num_gaussians
        if room <= 0:
            return 0
        mask = unexplained_mask(
            self.params, frame.camera, frame.depth, sh_degree=self.config.sh_degree,
            alpha_threshold=cfg.alpha_threshold, depth_tolerance=cfg.depth_tolerance,
        )  # fmt: skip
        new = seed_gaussians(
            frame.camera, frame.depth, frame.image, mask, stride=cfg.seed_stride,
            scale=cfg.seed_scale, opacity=cfg.seed_opacity, query_dim=self.config.query_dim,
            sh_degree=self.config.sh_degree,
        )  # fmt: skip
        n = new["means"].shape[0]
        if n > room:
            keep = torch.randperm(n, generator=self._gen)[:room].sort().values
            new = {k: v[keep] for k, v in new.items()}
            n = room
        if n == 0:
            return 0
        for key in GAUSSIAN_KEYS:
            self.params[key] = torch.cat([self.params[key], new[key]])
        for name, spec in self.specs.items():
            self.sums[name] = torch.cat([self.sums[name], torch.zeros(n, spec.dim)])
            self.masses[name] = torch.cat([self.masses[name], torch.zeros(n)])
            self.fit_cosine[name] = torch.cat([self.fit_cosine[name], torch.zeros(n)])
            self.fit_mass[name] = torch.cat([self.fit_mass[name], torch.zeros(n)])
        self.visibility = torch.cat([self.visibility, torch.zeros(n)])
        return n

    def _lift(self, frame: Keyframe) -> torch.Tensor:
        """Add this keyframe's lifted sums; returns the Gaussians it saw [N] bool."""
        if self.num_gaussians == 0:
            return torch.zeros(0, dtype=torch.bool)
        cam = frame.camera
        if self.live.lift_scale != 1.0:
            cam = cam.scaled(self.live.lift_scale)
        names = list(self.specs)
        seed = seed_maps(frame.features, names, cam.width, cam.height)  # [H', W', C]
        grad = lift(self.params, cam, seed)  # [N, C]
        sums, masses, vis = split_sums(grad, [self.specs[n].dim for n in names])
        for name, s, v in zip(names, sums, masses):
            self.sums[name] += s
            self.masses[name] += v
        self.visibility += vis
        return vis > 1e-6

    def _fit(self, seen: torch.Tensor, refit_all: set[str]) -> tuple[int, int]:
        """Least-squares queries for the Gaussians this keyframe saw whose lifted mass grew
        (all of a model whose projection changed); Adam polish for the worst fitted of them."""
        tau = self.config.gma_temperature
        fitted = polished = 0
        for name in self.specs:
            w = self.projections.get(name)
            if w is None:
                continue
            has = self.masses[name] > 1e-6
            sl = self.layout.slice(name)
            if name in refit_all:  # W changed: every query moves to the new row space
                idx = has.nonzero().squeeze(1)
            else:
                moved = self.masses[name] >= self.live.refit_growth * self.fit_mass[name]
                idx = (seen & has & moved).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            target = self.sums[name][idx] / self.masses[name][idx, None]  # [n, d]
            bank = self.banks[name]
            q = least_squares_queries(target, w)  # [n, s]
            polish = self.live.fit_steps > 0 and self.live.fit_budget > 0
            cos = (
                decode_cosine(q, target, w, bank, tau) if polish else torch.full_like(q[:, 0], -2)
            )
            worst = torch.argsort(cos)[: self.live.fit_budget]
            worst = worst[cos[worst] < self.live.good_cosine]
            if worst.numel() and polish:
                qw, cw = fit_queries(
                    target[worst], w, bank, tau, init=q[worst],
                    steps=self.live.fit_steps, lr=self.live.fit_lr, topk=self.live.fit_topk,
                )  # fmt: skip
                q[worst], cos[worst] = qw, cw
                polished += int(worst.numel())
            self.params["queries"][idx, sl] = q
            self.fit_cosine[name][idx] = cos
            self.fit_mass[name][idx] = self.masses[name][idx]
            fitted += int(idx.numel())
        return fitted, polished

    # -- what the memory server swaps in -----------------------------------------------------
    def lifted_features(self, name: str) -> torch.Tensor:  # [N, d_m]
        """S_m / V_m (zero rows for Gaussians no valid feature reached)."""
        m = self.masses[name]
        return self.sums[name] / m.clamp_min(1e-12)[:, None] * (m > 1e-6)[:, None]

    def snapshot(self, *, device: torch.device | str = "cpu"):
        """A :class:`~m3_core.memory.Memory` holding copies of the current state."""
        from m3_core.memory import Memory
        from m3_core.memory.grounding import cameras_to_json

        missing = [n for n in self.specs if n not in self.projections]
        if missing:
            raise InvalidInputError(f"no keyframe has brought features of {missing} yet")
        gaussians = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(v.clone()) for k, v in self.params.items()}
        )
        projections = torch.nn.ParameterDict(
            {
                n: torch.nn.Parameter(w.clone(), requires_grad=self.config.train_projection)
                for n, w in self.projections.items()
            }
        )
        extra = {
            "live": {"version": self.version, "keyframes": len(self.frames)},
            "frames": list(self.frames),
            "cameras": cameras_to_json(self.cameras),
        }
        banks = {n: b.clone() for n, b in self.banks.items()}
        memory = Memory(self.config, gaussians, projections, banks, extra=extra)
        if self.world_frame:  # as the trainer saves it: absent when unknown
            memory.world_frame = self.world_frame
        return memory.to(device)

    def grounding_index(self, *, temperatures: Mapping[str, float] | None = None):
        """The :class:`GroundingIndex` of :meth:`snapshot`: the fitted queries, visibility in
        keyframe pixels (the lifting mass / ``lift_scale``^2)."""
        from m3_core.memory.grounding import GroundingIndex

        vis = self.visibility / (self.live.lift_scale**2)
        return GroundingIndex(
            self.params["queries"].clone(), vis, dict(temperatures or {}), len(self.frames)
        )

    def save(
        self,
        directory: str | Path,
        *,
        feature_dirs: Mapping[str, Path] | None = None,
        temperatures: Mapping[str, float] | None = None,
        snapshot=None,
    ):
        """Write the snapshot and its grounding index into ``directory`` (each file atomic);
        ``feature_dirs`` name -> folder holding that feature's ``vocabulary.npz`` /
        ``meta.json``, copied to ``DIR/features/<name>/`` so the folder answers text queries;
        ``temperatures``: the relevancy temperatures fitted for the snapshot
        (:func:`m3_core.memory.grounding.fit_temperatures`), stored in its index;
        ``snapshot``: the :meth:`snapshot` to write, when the caller took one already (for the
        temperatures) and nothing was folded since; else one is taken here."""
        from m3_core.io import atomic_write_bytes
        from m3_core.memory.grounding import memory_sha

        if snapshot is not None and snapshot.extra.get("live", {}).get("version") != self.version:
            raise InvalidInputError("the snapshot given to save is not of the current version")
        out = (snapshot if snapshot is not None else self.snapshot()).save(directory)
        index = self.grounding_index(temperatures=temperatures)
        index.memory_sha = memory_sha(out)
        index.save(out)
        for name, src in (feature_dirs or {}).items():
            for fname in ("vocabulary.npz", "meta.json"):
                if (Path(src) / fname).is_file():
                    dst = Path(out) / "features" / name / fname
                    atomic_write_bytes(dst, (Path(src) / fname).read_bytes())
        return out
