"""Baseline feature memories for ``bench_memory.py``, trained by the project's own Trainer.

Every method keeps the same 3DGS geometry and the same per-Gaussian query tensor
("queries" [N, k]) rendered by the same rasterizer; they differ only in how a rendered query
is decoded into the feature space [d] (``Memory.decode``, which the training loss, the
test-view metrics, the grounding index and ``MemoryPredictor`` all call):

* ``m3``           GMA through the PSC bank, W_m trained (this project's default);
* ``m3_frozen``    GMA, W_m frozen at N(0, 1) (the released M3 code);
* ``f3dgs``        Feature-3DGS: the d-dim feature itself per Gaussian (k = d), rendered
                   directly; decoded as ``mean + q * std`` with the training features' fixed
                   per-channel mean / std (a re-parametrisation that lets the shared query
                   learning rate fit features of any scale; same bytes up to 2 d floats);
* ``f3dgs_lowdim`` Feature-3DGS's speed-up: k-dim feature per Gaussian + a trained 1x1
                   (linear) decoder W [k, d]; its offset is the fixed training mean (Feature-3DGS
                   learns a bias; not trained here because the loop only trains Gaussians and
                   per-model projections);
* ``pca``          LangSplat-style: k-dim per Gaussian, a fixed linear decoder from
                   ``sklearn.decomposition.PCA`` fitted on the training features (whitened:
                   W = sqrt(explained variance) x components, so latents are ~unit scale).
* ``lifted``       the training-free live memory (:func:`lifted_memory`): its own Gaussians
                   seeded from the training views' depth, features lifted onto them and
                   queries fitted through GMA (``m3_core.live``), no optimisation loop; the
                   one method whose geometry differs.

The linear decoders live in the Memory's own slots: projection = W [k, d] (``diag(std)`` for
``f3dgs``), PSC bank slot = the offset [1, d]. :class:`BaselineTrainer` replaces only the
construction of the memory (``Trainer._new_memory``); the loop, schedule, losses, densification,
saving and grounding index are the engine's. All methods draw the initial Gaussians from the
same seed and restart the loop's random stream (view order, feature sample points, backgrounds)
from it, so they train the same geometry. :func:`feature_tensors` names what each method must
store for its features (what ``bench_memory`` counts as bytes).
"""

from __future__ import annotations

import dataclasses

import m3_core  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

# isort: split
import torch

from m3_core.config import MemoryConfig
from m3_core.errors import InvalidInputError
from m3_core.memory import Memory
from m3_core.train import Trainer

METHODS = ("f3dgs", "f3dgs_lowdim", "pca", "m3_frozen", "m3", "lifted")
LINEAR = ("f3dgs", "f3dgs_lowdim", "pca")
GEOMETRY_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")
FIT_ROWS = 100_000  # training feature rows (random subsample) the linear decoders are fitted on


class LinearMemory(Memory):
    """A Memory decoded linearly: ``out = q @ W + b`` with W = ``projections[name]`` [k, d] and
    b = ``banks[name][0]`` [d]; ``diagonal=True`` (``f3dgs``, k = d) uses ``q * diag(W) + b``."""

    def __init__(self, *args, diagonal: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.diagonal = diagonal

    def decode(self, name: str, queries: torch.Tensor, *, chunk_size: int = 65536) -> torch.Tensor:
        sl = self.layout.slice(name)
        s_m = sl.stop - sl.start
        if not isinstance(queries, torch.Tensor) or queries.dim() < 1:
            raise InvalidInputError("queries must be a tensor [..., Q] or [..., s_m]")
        if queries.shape[-1] == self.layout.total and queries.shape[-1] != s_m:
            queries = queries[..., sl]
        if queries.shape[-1] != s_m:
            raise InvalidInputError(
                f"queries have {queries.shape[-1]} channels; {name!r} needs {s_m}"
            )
        w = self.projections[name].to(queries.dtype)  # [k, d]
        b = self.banks[name][0].to(queries.dtype)  # [d]
        if self.diagonal:
            return queries * torch.diagonal(w) + b  # [..., d]
        return queries @ w + b  # [..., d]


def fit_rows(grids: dict[int, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
    """Non-zero training feature rows [n, d] (float32), a random subsample of FIT_ROWS."""
    from m3_core.memory.psc import collect_features

    rows = collect_features([grids[i].float() for i in sorted(grids)])  # [n, d]
    if rows.shape[0] == 0:
        raise InvalidInputError("no non-zero feature vectors to fit a decoder on")
    if rows.shape[0] > FIT_ROWS:
        rows = rows[torch.randperm(rows.shape[0], generator=generator)[:FIT_ROWS]]
    return rows


def linear_decoder(
    method: str, rows: torch.Tensor, k: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(W [k, d], offset [d], trainable) of a linear baseline fitted on ``rows`` [n, d]."""
    mean = rows.mean(0)  # [d]
    d = rows.shape[1]
    if method == "f3dgs":
        std = rows.std(0).clamp_min(1e-3)  # [d]
        return torch.diag(std), mean, False
    if method == "f3dgs_lowdim":  # N(0, 1/k) x feature scale, as a 1x1 conv's init scale
        scale = float(rows.std(0).mean())
        return torch.randn(k, d, generator=generator) * scale / k**0.5, mean, True
    if method == "pca":
        from sklearn.decomposition import PCA

        if k > min(rows.shape):
            raise InvalidInputError(
                f"pca: k = {k} exceeds the data's rank bound {min(rows.shape)}"
            )
        pca = PCA(n_components=k, svd_solver="full").fit(rows.double().numpy())
        comps = torch.from_numpy(pca.components_).float()  # [k, d], orthonormal rows
        sd = torch.from_numpy(pca.explained_variance_).float().clamp_min(1e-12).sqrt()  # [k]
        return comps * sd[:, None], torch.from_numpy(pca.mean_).float(), False
    raise InvalidInputError(f"not a linear baseline: {method!r} (one of {LINEAR})")


class BaselineTrainer(Trainer):
    """The engine's Trainer with the memory of ``method`` (module doc); ``k`` = query channels of
    the low-dim methods (``f3dgs`` uses d, M3 its FeatureSpec's channels); ``queries_lr`` > 0
    replaces the config's learning rate of the per-Gaussian queries."""

    def __init__(
        self, dataset, config, out_dir, *, method: str, k: int, queries_lr: float = 0.0, **kwargs
    ) -> None:
        if method not in METHODS:
            raise InvalidInputError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
        if len(config.features) != 1:
            raise InvalidInputError("the baselines take exactly one feature")
        want_proj = method == "m3"
        if method.startswith("m3") and config.train_projection != want_proj:
            config = dataclasses.replace(config, train_projection=want_proj)
        if queries_lr > 0:  # the method's own feature learning rate (see bench_memory)
            config = dataclasses.replace(
                config, optim=dataclasses.replace(config.optim, queries_lr=queries_lr)
            )
        super().__init__(dataset, config, out_dir, **kwargs)
        self.method, self.k = method, int(k)

    def _new_memory(self):
        from m3_core.splat import init_gaussians
        from m3_core.train.init import initial_points
        from m3_core.train.targets import build_bank, model_spec

        cfg, fspec = self.cfg, self.cfg.features[0]
        grids = {i: self.targets[fspec.name][i] for i in self.train_ids}
        spec = model_spec(fspec, grids)
        g_dec = torch.Generator().manual_seed(cfg.seed + 1)  # decoder / PSC randomness
        if self.method in LINEAR:
            k = spec.dim if self.method == "f3dgs" else self.k
            spec = dataclasses.replace(spec, query_channels=k)
        mcfg = MemoryConfig(
            models=[spec],
            sh_degree=cfg.sh_degree,
            gma_temperature=cfg.gma_temperature,
            train_projection=self.method in ("m3", "f3dgs_lowdim"),
        )
        g_init = torch.Generator().manual_seed(cfg.seed)  # the same Gaussians for every method
        points, colors, self.init_source = initial_points(
            self.dataset, self.train_ids, cfg.init_points, g_init
        )
        params = init_gaussians(
            points, colors, mcfg.query_dim, cfg.sh_degree,
            init_opacity=cfg.init_opacity, generator=g_init,
        )  # fmt: skip
        self.gen.manual_seed(cfg.seed)  # the loop's random stream: the same for every method
        if self.method.startswith("m3"):
            from m3_core.train.trainer import Progress

            self.on_progress(Progress("building_psc"))
            bank, used = build_bank(
                grids, spec.psc_threshold, max_inputs=cfg.psc_max_inputs,
                max_rows=cfg.psc_max_rows, generator=g_dec, device=self.device,
            )  # fmt: skip
            spec = dataclasses.replace(spec, psc_threshold=used)
            mcfg = dataclasses.replace(mcfg, models=[spec])
            return Memory.create(mcfg, params, {spec.name: bank}, seed=cfg.seed).to(self.device)
        w, b, trainable = linear_decoder(self.method, fit_rows(grids, g_dec), spec.query_channels,
                                         g_dec)  # fmt: skip
        proj = torch.nn.ParameterDict({spec.name: torch.nn.Parameter(w, requires_grad=trainable)})
        memory = LinearMemory(mcfg, params, proj, {spec.name: b[None]},
                              diagonal=self.method == "f3dgs")  # fmt: skip
        return memory.to(self.device)


def feature_tensors(memory: Memory, method: str) -> dict[str, torch.Tensor]:
    """What ``method`` must store for its features: the per-Gaussian queries and the decoder
    (M3: W_m and the PSC bank; linear: W and offset; ``f3dgs``: per-channel std and mean)."""
    out = {"queries": memory.gaussians["queries"].detach()}
    for name in memory.layout.names:
        w, b = memory.projections[name].detach(), memory.banks[name]
        if method == "f3dgs":
            out[f"{name}.std"], out[f"{name}.mean"] = torch.diagonal(w).clone(), b[0]
        elif method in LINEAR:
            out[f"{name}.decoder"], out[f"{name}.offset"] = w, b[0]
        else:
            out[f"{name}.proj"], out[f"{name}.psc"] = w, b
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def geometry_tensors(memory: Memory) -> dict[str, torch.Tensor]:
    """The 3DGS part every method shares (means, scales, quats, opacities, SH)."""
    return {k: memory.gaussians[k].detach().cpu().contiguous() for k in GEOMETRY_KEYS}


def lifted_memory(dataset, feature: str, out_dir, *, channels: int, threshold: float):
    """The training-free memory of the training views (``m3_core.live.LiveMemory``, default
    LiveConfig), saved with its grounding index and the feature's vocabulary in ``out_dir``;
    returns it as loaded from there."""
    from m3_core.live import LiveConfig, LiveMemory, keyframe_from_dataset
    from m3_core.types import ModelSpec

    first = keyframe_from_dataset(dataset, dataset.train_indices[0], [feature])
    spec = ModelSpec(feature, int(first.features[feature].shape[-1]), channels, threshold)
    live = LiveMemory(MemoryConfig(models=[spec], sh_degree=0), LiveConfig())
    for i in dataset.train_indices:
        live.add_keyframe(keyframe_from_dataset(dataset, i, [feature]))
    live.save(out_dir, feature_dirs={feature: dataset.root / "features" / feature})
    return Memory.load(out_dir)  # what a server would load
