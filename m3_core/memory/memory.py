"""``Memory``: Gaussians + principal queries + per-model projections and PSC banks.

A memory is everything needed to render and decode a scene:

* ``config``      :class:`~m3_core.config.MemoryConfig` (model specs, SH degree, tau, ...)
* ``gaussians``   ``torch.nn.ParameterDict`` in the layout of ``m3_core.splat``:
  "means" [N, 3], "scales" [N, 3] (log), "quats" [N, 4] (wxyz), "opacities" [N] (logit),
  "sh0" [N, 1, 3], "shN" [N, K-1, 3] with K = (sh_degree + 1)^2, "queries" [N, Q]
* ``projections`` ``ParameterDict`` name -> W_m [s_m, d_m], N(0, 1) at creation;
  ``requires_grad == config.train_projection``
* ``banks``       name -> frozen PSC bank [t_m, d_m] (raw feature rows, no grad)
* ``world_frame`` the ROS fixed frame the Gaussians are in ("map", "odom"; "" unknown), typed
  and checked; stored in memory.json as ``extra["world_frame"]`` (where older memories have it)
* ``extra``       free JSON-able metadata saved alongside (trainer: step, frames, ...)

``layout`` (a :class:`ChannelLayout`) maps each model name to its slice of the query.
Saving / loading lives in :mod:`m3_core.memory.io`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from m3_core.config import MemoryConfig
from m3_core.errors import InvalidInputError
from m3_core.memory.gma import gma_decode
from m3_core.memory.layout import ChannelLayout

GAUSSIAN_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN", "queries")
MAX_FRAME_LEN = 256


def check_world_frame(frame: Any) -> str:
    """``frame`` if it can name a ROS frame (a string without whitespace, "" for unknown)."""
    if not isinstance(frame, str):
        raise InvalidInputError(f"world_frame must be a string, got {frame!r:.80}")
    if len(frame) > MAX_FRAME_LEN or any(c.isspace() or not c.isprintable() for c in frame):
        raise InvalidInputError(
            f"world_frame must be a frame name without spaces (at most {MAX_FRAME_LEN} "
            f"characters), got {frame!r:.80}"
        )
    return frame


def _gaussian_shapes(config: MemoryConfig, n: int) -> dict[str, tuple[int, ...]]:
    k = (config.sh_degree + 1) ** 2
    return {
        "means": (n, 3),
        "scales": (n, 3),
        "quats": (n, 4),
        "opacities": (n,),
        "sh0": (n, 1, 3),
        "shN": (n, k - 1, 3),
        "queries": (n, config.query_dim),
    }


def validate_parts(
    config: MemoryConfig,
    gaussians: Mapping[str, torch.Tensor],
    projections: Mapping[str, torch.Tensor],
    banks: Mapping[str, torch.Tensor],
) -> None:
    """Raise InvalidInputError unless the parts agree with each other and with ``config``."""
    if not isinstance(config, MemoryConfig):
        raise InvalidInputError(f"config must be a MemoryConfig, got {type(config).__name__}")
    missing = [k for k in GAUSSIAN_KEYS if k not in gaussians]
    if missing:
        raise InvalidInputError(f"gaussians lack {missing} (need {list(GAUSSIAN_KEYS)})")
    n = gaussians["means"].shape[0] if gaussians["means"].dim() else -1
    for key, shape in _gaussian_shapes(config, n).items():
        got = tuple(gaussians[key].shape)
        if got != shape:
            raise InvalidInputError(f"gaussians[{key!r}] has shape {got}, expected {shape}")
    for key, t in gaussians.items():
        if key not in GAUSSIAN_KEYS and (t.dim() == 0 or t.shape[0] != n):
            raise InvalidInputError(f"gaussians[{key!r}] must have {n} rows")
        if not t.is_floating_point():
            raise InvalidInputError(f"gaussians[{key!r}] must be floating point")
    names = [m.name for m in config.models]
    for what, parts in (("projections", projections), ("banks", banks)):
        if sorted(parts) != sorted(names):
            raise InvalidInputError(f"{what} are for {sorted(parts)}, the models are {names}")
    for spec in config.models:
        w, b = projections[spec.name], banks[spec.name]
        if tuple(w.shape) != (spec.query_channels, spec.dim):
            raise InvalidInputError(
                f"projection {spec.name!r} has shape {tuple(w.shape)}, "
                f"expected {(spec.query_channels, spec.dim)}"
            )
        if b.dim() != 2 or b.shape[1] != spec.dim or b.shape[0] == 0:
            raise InvalidInputError(
                f"PSC bank {spec.name!r} must be [t >= 1, {spec.dim}], got {tuple(b.shape)}"
            )
        if not b.is_floating_point() or not bool(torch.isfinite(b).all()):
            raise InvalidInputError(f"PSC bank {spec.name!r} must be finite floating point")


class Memory:
    """The scene memory (see the module doc). Build with :meth:`create` or :meth:`load`."""

    def __init__(
        self,
        config: MemoryConfig,
        gaussians: torch.nn.ParameterDict,
        projections: torch.nn.ParameterDict,
        banks: Mapping[str, torch.Tensor],
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        validate_parts(config, gaussians, projections, banks)
        self.config = config
        self.gaussians = gaussians
        self.projections = projections
        self.banks: dict[str, torch.Tensor] = {k: v.detach() for k, v in banks.items()}
        self.extra: dict[str, Any] = dict(extra or {})
        check_world_frame(self.extra.get("world_frame", ""))
        self.source: Path | None = None  # folder it was loaded from / last saved to
        self._layout = ChannelLayout.from_specs(config.models)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        config: MemoryConfig,
        gaussians: Mapping[str, torch.Tensor],
        banks: Mapping[str, torch.Tensor],
        *,
        seed: int = 0,
    ) -> Memory:
        """A new memory around ``gaussians`` and PSC ``banks`` (name -> [t_m, d_m]).

        Projections W_m [s_m, d_m] are drawn N(0, 1) on the CPU from ``torch.Generator``
        seeded with ``seed``, one after another in ``config.models`` order, then moved to the
        device of "means". A plain dict of tensors is wrapped into a ParameterDict.
        """
        if not isinstance(gaussians, torch.nn.ParameterDict):
            gaussians = torch.nn.ParameterDict(
                {k: torch.nn.Parameter(v.detach().clone()) for k, v in gaussians.items()}
            )
        if "means" not in gaussians:
            raise InvalidInputError(f"gaussians lack 'means' (need {list(GAUSSIAN_KEYS)})")
        device = gaussians["means"].device
        gen = torch.Generator().manual_seed(int(seed))
        projections = torch.nn.ParameterDict()
        for spec in config.models:
            w = torch.randn(spec.query_channels, spec.dim, generator=gen)  # [s_m, d_m]
            projections[spec.name] = torch.nn.Parameter(
                w.to(device), requires_grad=config.train_projection
            )
        banks = {k: torch.as_tensor(v).to(device) for k, v in banks.items()}
        return cls(config, gaussians, projections, banks)

    # -- properties -----------------------------------------------------------------------
    @property
    def layout(self) -> ChannelLayout:
        return self._layout

    @property
    def world_frame(self) -> str:
        """The ROS fixed frame the Gaussians (and every answer about them) are in; "" when the
        data did not say. Saved with the memory (``extra["world_frame"]`` in memory.json)."""
        return self.extra.get("world_frame", "")

    @world_frame.setter
    def world_frame(self, frame: str) -> None:
        self.extra["world_frame"] = check_world_frame(frame)

    @property
    def num_gaussians(self) -> int:
        return int(self.gaussians["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.gaussians["means"].device

    # -- decoding -------------------------------------------------------------------------
    def decode(
        self,
        name: str,
        queries: torch.Tensor,
        *,
        chunk_size: int = 65536,
        matmul_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """GMA-decode queries into model ``name``'s feature space -> [..., d_m].

        ``queries`` is either the full query [..., Q] (the slice of ``name`` is taken) or
        already that slice [..., s_m]. Differentiable w.r.t. the queries and, when trainable,
        the projection. Unknown ``name`` raises UnknownModelError. ``matmul_dtype``: see
        :func:`~m3_core.memory.gma.gma_decode` (None: exact float32).
        """
        sl = self._layout.slice(name)
        s_m = sl.stop - sl.start
        if not isinstance(queries, torch.Tensor) or queries.dim() < 1:
            raise InvalidInputError("queries must be a tensor [..., Q] or [..., s_m]")
        if queries.shape[-1] == s_m:
            q = queries
        elif queries.shape[-1] == self._layout.total:
            q = queries[..., sl]
        else:
            raise InvalidInputError(
                f"queries have {queries.shape[-1]} channels; {name!r} needs its slice of "
                f"{s_m} or the full query of {self._layout.total}"
            )
        w = self.projections[name]
        return gma_decode(
            q,
            w.to(q.dtype),
            self.banks[name],
            self.config.gma_temperature,
            chunk_size=chunk_size,
            matmul_dtype=matmul_dtype,
        )

    # -- device / persistence -------------------------------------------------------------
    def to(self, device: torch.device | str) -> Memory:
        """Move every tensor to ``device`` in place (Parameter objects are kept); returns self."""
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidInputError(f"bad device {device!r}: {exc}") from None
        self.gaussians.to(device)
        self.projections.to(device)
        self.banks = {k: v.to(device) for k, v in self.banks.items()}
        return self

    def save(self, directory: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``memory.safetensors`` + ``memory.json`` atomically into ``directory``.

        ``extra`` is merged into :attr:`extra` (and saved). Returns the folder.
        """
        from m3_core.memory.io import save_memory

        if extra and "world_frame" in extra:  # refused before anything is written
            check_world_frame(extra["world_frame"])
        return save_memory(self, directory, extra=extra)

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> Memory:
        """Load a memory saved by :meth:`save` (safetensors only, no pickle); CheckpointError
        if anything is missing, truncated, corrupt or inconsistent."""
        from m3_core.memory.io import load_memory

        return load_memory(directory, device)

    def info(self) -> dict[str, Any]:
        """JSON-able summary: Gaussians, query dim, per-model channels/slice/PSC size, bytes."""
        from m3_core.memory.io import memory_info

        return memory_info(self)

    def __repr__(self) -> str:
        models = ", ".join(
            f"{n}[{self._layout.slice(n).start}:{self._layout.slice(n).stop}] "
            f"psc={self.banks[n].shape[0]}"
            for n in self._layout.names
        )
        return f"Memory(N={self.num_gaussians}, Q={self._layout.total}, {models or 'no models'})"
