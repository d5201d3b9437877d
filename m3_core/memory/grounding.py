"""Grounding index: what a memory needs to answer "where is X?" in 3D, derived once.

A Gaussian's *own* principal query is not what it shows. Pixels decode the composite
``Q(p) = sum_i q_i alpha_i T_i``; training only constrains that sum, so a single Gaussian's
query, decoded alone, can point anywhere (measured on a synthetic room: of the Gaussians whose
own query scored "lamp" > 0.5, 1164 of 1895 lay outside the lamp's box). The index holds,
per Gaussian, what the memory says *where that Gaussian is seen*:

* ``queries`` [N, Q]: the Gaussian's **lifted query**, the average of the rendered query map
  over the training pixels it contributes to, weighted by its contribution
  ``w_i(p) = alpha_i(p) T_i(p)`` (visibility-weighted lifting, as in Occam's LGS / VALA, applied
  to the memory's own rendering). With the same room: 5 of 913 outside the box.
* ``visibility`` [N]: ``sum_p w_i(p)`` over the training views, in pixels: how much of the
  training images the Gaussian explains. Hidden Gaussians (inside objects, behind walls)
  have ~0 and are not grounded.
* ``temperatures``: per closed-vocabulary feature, the temperature of its relevancy
  (m3_core.query.relevancy: does the text rank in the top k of the vocabulary here?) fitted
  on the training views: the decoded feature at every feature-grid cell is ranked against
  the vocabulary, the *real* feature map's ranking of that cell is the target (entry in its
  top k or not), and ``T`` minimises the binary cross-entropy of sigmoid(margin / T)
  (temperature scaling, Guo et al. 2017). A relevancy of 0.5 then means: on the memory's own
  training views, cells scored 0.5 had the text among the source model's top k about half
  the time.

Both sums come from one backward pass per view: render colours ``c_i = [q_i, 1]``, then
back-propagate ``dL/dC(p) = [Q(p), 1]``; the gradient on ``c_i`` is ``sum_p w_i(p) [Q(p), 1]``
(any rasterizer backend; gsplat on CUDA). :func:`lift_queries_dense` is the slow twin.

Saved as ``DIR/grounding.safetensors`` beside the memory, tied to it by the memory's tensor
checksum: a memory changed after the index was built (training, growth) makes it stale, and
:func:`load_grounding_index` returns None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from m3_core.errors import InvalidInputError
from m3_core.io import atomic_write_bytes
from m3_core.memory.calibration import Calibration
from m3_core.types import Camera

INDEX_FILE = "grounding.safetensors"
INDEX_FORMAT = "m3-grounding-index/1"


@dataclass
class GroundingIndex:
    """Per-Gaussian lifted queries and visibility, fitted temperatures (module doc)."""

    queries: torch.Tensor  # [N, Q] lifted principal queries
    visibility: torch.Tensor  # [N] training-view pixel mass
    temperatures: dict[str, float] = field(default_factory=dict)
    num_views: int = 0
    memory_sha: str = ""  # checksum of the memory tensors it was built from

    def __post_init__(self) -> None:
        n = self.visibility.shape[0] if self.visibility.ndim == 1 else -1
        if self.queries.ndim != 2 or self.queries.shape[0] != n:
            raise InvalidInputError(
                f"grounding index needs queries [N, Q] and visibility [N]; got "
                f"{tuple(self.queries.shape)} and {tuple(self.visibility.shape)}"
            )

    @property
    def num_gaussians(self) -> int:
        return self.queries.shape[0]

    def to(self, device: torch.device | str) -> GroundingIndex:
        return GroundingIndex(
            self.queries.to(device),
            self.visibility.to(device),
            dict(self.temperatures),
            self.num_views,
            self.memory_sha,
        )

    def save(self, directory: str | Path) -> Path:
        meta = {
            "format": INDEX_FORMAT,
            "memory_sha": self.memory_sha,
            "num_views": str(self.num_views),
            "temperatures": json.dumps(self.temperatures, sort_keys=True),
        }
        blob = st_save(
            {
                "queries": self.queries.detach().float().cpu().contiguous(),
                "visibility": self.visibility.detach().float().cpu().contiguous(),
            },
            metadata=meta,
        )
        path = Path(directory) / INDEX_FILE
        atomic_write_bytes(path, blob)
        return path


def memory_sha(directory: str | Path) -> str:
    """The tensor checksum recorded in ``DIR/memory.json`` ("" when unreadable)."""
    try:
        meta = json.loads((Path(directory) / "memory.json").read_text(encoding="utf-8"))
        return str(meta.get("sha256", ""))
    except (OSError, ValueError):
        return ""


def load_grounding_index(
    directory: str | Path, memory, device: torch.device | str = "cpu"
) -> GroundingIndex | None:
    """The index saved in ``directory`` if it belongs to ``memory`` as saved there, else None
    (missing, corrupt, or built from other tensors)."""
    path = Path(directory) / INDEX_FILE
    if not path.is_file():
        return None
    try:
        blob = path.read_bytes()
        tensors = st_load(blob)
        meta = _metadata(blob)
        temps = {str(k): float(v) for k, v in json.loads(meta.get("temperatures", "{}")).items()}
        index = GroundingIndex(
            tensors["queries"],
            tensors["visibility"],
            temps,
            int(meta.get("num_views", "0")),
            meta.get("memory_sha", ""),
        )
    except (OSError, SafetensorError, KeyError, ValueError, TypeError, RuntimeError):
        return None
    if meta.get("format") != INDEX_FORMAT or index.memory_sha != memory_sha(directory):
        return None
    if index.queries.shape != memory.gaussians["queries"].shape:
        return None
    if not all(math.isfinite(t) and t > 0 for t in temps.values()):
        return None
    return index.to(device)


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (header: u64 length + JSON)."""
    n = int.from_bytes(blob[:8], "little")
    return dict(json.loads(blob[8 : 8 + n]).get("__metadata__", {}))


# -- lifting ----------------------------------------------------------------------------------
def _raster_args(memory):
    g = memory.gaussians
    return (
        g["means"].detach(),
        g["quats"].detach(),
        torch.exp(g["scales"].detach()),
        torch.sigmoid(g["opacities"].detach()),
    )


def lift_view(memory, camera: Camera, *, backend: str = "auto"):
    """One view's contribution: (weighted query sums [N, Q], pixel mass [N], query map
    [H, W, Q]) via one rasterizer forward + backward (module doc)."""
    from m3_core.splat import rasterize

    means, quats, scales, opac = _raster_args(memory)
    q = memory.gaussians["queries"].detach()  # [N, Q]
    n, s = q.shape
    cam = camera.to(means.device)
    colors = torch.cat([q, q.new_ones(n, 1)], dim=1).requires_grad_(True)  # [N, Q + 1]
    out, _, _ = rasterize(
        means,
        quats,
        scales,
        opac,
        colors,
        cam.viewmat.to(means)[None],
        cam.K.to(means)[None],
        cam.width,
        cam.height,
        render_mode="RGB",
        backgrounds=q.new_zeros(1, s + 1),
        backend=backend,
    )  # [1, H, W, Q + 1]
    qmap = out[0, ..., :s].detach()  # [H, W, Q]
    out.backward(torch.cat([qmap, torch.ones_like(out[0, ..., s:])], dim=-1)[None])
    grad = colors.grad  # [N, Q + 1]
    return grad[:, :s], grad[:, s], qmap


def lift_queries(
    memory,
    cameras: Sequence[Camera],
    *,
    backend: str = "auto",
    on_view: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lifted queries [N, Q] and visibility [N] over ``cameras`` (module doc). A Gaussian no
    view sees keeps its own query. ``on_view(k, query_map)`` sees each rendered query map."""
    q = memory.gaussians["queries"].detach()
    acc = torch.zeros_like(q)  # [N, Q]
    vis = q.new_zeros(q.shape[0])  # [N]
    with torch.enable_grad():
        for k, cam in enumerate(cameras):
            part, mass, qmap = lift_view(memory, cam, backend=backend)
            acc += part
            vis += mass
            if on_view is not None:
                on_view(k, qmap)
    seen = vis > 1e-6
    lifted = torch.where(seen[:, None], acc / vis.clamp_min(1e-6)[:, None], q)
    return lifted, vis


def lift_queries_dense(memory, cameras: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor]:
    """Slow twin of :func:`lift_queries` for tiny memories: the weights ``w_i(p)`` rendered
    explicitly (one one-hot colour channel per Gaussian, dense float64 reference compositor),
    then the weighted sums written out; no backward pass involved."""
    from m3_core.splat import rasterize

    means, quats, scales, opac = (t.double() for t in _raster_args(memory))
    q = memory.gaussians["queries"].detach().double()  # [N, Q]
    n = q.shape[0]
    acc, vis = torch.zeros_like(q), q.new_zeros(n)
    for cam in cameras:
        out, _, _ = rasterize(
            means, quats, scales, opac, torch.eye(n, dtype=torch.float64),
            cam.viewmat.double()[None], cam.K.double()[None], cam.width, cam.height,
            render_mode="RGB", backgrounds=q.new_zeros(1, n), backend="dense",
        )  # fmt: skip
        w = out[0].reshape(-1, n)  # [H*W, N] = alpha_i T_i per pixel
        acc += w.T @ (w @ q)  # sum_p w_i(p) Q(p)
        vis += w.sum(0)
    seen = vis > 1e-6
    lifted = torch.where(seen[:, None], acc / vis.clamp_min(1e-6)[:, None], q)
    return lifted.float(), vis.float()


def build_grounding_index(
    memory,
    cameras: Sequence[Camera],
    *,
    calibration: Mapping[str, tuple[torch.Tensor, Iterable[torch.Tensor | None]]] | None = None,
    backend: str = "auto",
    max_calibration_entries: int = 20_000_000,
    memory_sha: str = "",
) -> GroundingIndex:
    """Lift over ``cameras`` and fit a temperature per entry of ``calibration``: name ->
    (vocabulary [K, d], real feature grids [h, w, d] aligned with ``cameras``, None where a
    view has none). Views past ``max_calibration_entries`` (cells x vocabulary entries) per
    feature are not sampled."""
    cal = Calibration(memory, calibration, max_calibration_entries)
    lifted, vis = lift_queries(memory, cameras, backend=backend, on_view=cal.on_view)
    return GroundingIndex(lifted, vis, cal.temperatures(), len(cameras), memory_sha)


def fit_temperatures(
    memory,
    cameras: Sequence[Camera],
    calibration: Mapping[str, tuple[torch.Tensor, Iterable[torch.Tensor | None]]],
    *,
    backend: str = "auto",
    max_calibration_entries: int = 20_000_000,
) -> dict[str, float]:
    """The temperatures of :func:`build_grounding_index` alone (same ``calibration``): one
    rasterizer forward per view renders its query map, no lifting (the live memory lifts
    as keyframes arrive and fits its temperatures on the latest ones)."""
    from m3_core.splat import rasterize

    cal = Calibration(memory, calibration, max_calibration_entries)
    means, quats, scales, opac = _raster_args(memory)
    q = memory.gaussians["queries"].detach()  # [N, Q]
    with torch.no_grad():
        for k, camera in enumerate(cameras):
            cam = camera.to(means.device)
            out, _, _ = rasterize(
                means, quats, scales, opac, q, cam.viewmat.to(means)[None],
                cam.K.to(means)[None], cam.width, cam.height, render_mode="RGB",
                backgrounds=q.new_zeros(1, q.shape[1]), backend=backend,
            )  # fmt: skip
            cal.on_view(k, out[0])  # [H, W, Q]
    return cal.temperatures()


# -- the training views, kept in the memory's metadata -----------------------------------------
def cameras_to_json(cameras: Sequence[Camera]) -> list[dict]:
    """Compact JSON of cameras (intrinsics, size, camera-to-world row-major, OpenCV axes)."""
    return [
        {
            "K": [round(float(v), 6) for v in (c.fx, c.fy, c.cx, c.cy)],
            "size": [int(c.width), int(c.height)],
            "c2w": [round(float(v), 7) for v in c.c2w[:3].reshape(-1).tolist()],
        }
        for c in cameras
    ]


def cameras_from_json(items) -> list[Camera]:
    """Inverse of :func:`cameras_to_json`; InvalidInputError on malformed entries."""
    cams = []
    try:
        for it in items:
            fx, fy, cx, cy = (float(v) for v in it["K"])
            w, h = (int(v) for v in it["size"])
            c2w = torch.eye(4)
            c2w[:3] = torch.tensor([float(v) for v in it["c2w"]]).reshape(3, 4)
            cams.append(Camera(fx, fy, cx, cy, w, h, c2w))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"bad camera list in memory metadata: {exc}") from None
    return cams
