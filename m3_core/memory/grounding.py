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
from m3_core.types import Camera

INDEX_FILE = "grounding.safetensors"
INDEX_FORMAT = "m3-grounding-index/1"
TEMPERATURE_RANGE = (1e-3, 1.0)
TOP_FRACTION = 0.005  # closed vocabulary: the text must rank in the top 0.5 % (at least 1st)


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


# -- calibration ------------------------------------------------------------------------------
def vocabulary_top_k(size: int) -> int:
    """``k`` of the closed-vocabulary relevancy (m3_core.query.relevancy) for a vocabulary of
    ``size`` entries: the top ``TOP_FRACTION`` of it, at least the best entry."""
    return max(1, round(size * TOP_FRACTION))


def rank_margins(cosines: torch.Tensor, k: int) -> torch.Tensor:  # [M, K] -> [M, K]
    """Per sample and entry j: cos_j minus the k-th largest cosine of the *other* entries
    (> 0 exactly when j ranks in the top k; m3_core.query.relevancy, closed vocabulary)."""
    k = min(int(k), cosines.shape[1] - 1)
    vals = cosines.topk(k + 1, dim=1).values  # [M, k + 1]
    inside = cosines >= vals[:, k - 1 : k]  # j is among the k best
    return cosines - torch.where(inside, vals[:, k : k + 1], vals[:, k - 1 : k])


def fit_temperature(
    margins: torch.Tensor,  # [...] rank margins of the rendered features (rank_margins)
    positives: torch.Tensor,  # [...] bool: the entry ranks in the real feature's top k
    bounds: tuple[float, float] = TEMPERATURE_RANGE,
) -> float:
    """The temperature T for which sigmoid(margin / T) best predicts ``positives`` (mean
    binary cross-entropy; golden-section search on log T within ``bounds``: the loss is
    convex in 1/T)."""
    if margins.shape != positives.shape or margins.numel() == 0:
        raise InvalidInputError("fit_temperature needs margins and positives of one shape, > 0")
    z, y = margins.double().reshape(-1), positives.double().reshape(-1)

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(z / math.exp(log_t), y))

    a, b = math.log(bounds[0]), math.log(bounds[1])
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = nll(x1), nll(x2)
    for _ in range(60):
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = nll(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = nll(x2)
    return float(math.exp((a + b) / 2))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def calibration_samples(
    memory, name: str, qmap: torch.Tensor, grid: torch.Tensor, vocabulary: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One view's (margins [M, K], positives [M, K]) for :func:`fit_temperature`: the rendered
    query map [H, W, Q] sampled at the centres of the real feature grid [h, w, d] (bilinear),
    decoded, ranked against the vocabulary [K, d] (:func:`rank_margins`); positive = the entry
    ranks in the top k of the real cell's feature. Cells whose real feature is all zero (no
    data) are skipped."""
    from m3_core.data.features import sample_bilinear

    h, w, d = grid.shape
    v, u = torch.meshgrid(
        (torch.arange(h, device=grid.device) + 0.5) / h,
        (torch.arange(w, device=grid.device) + 0.5) / w,
        indexing="ij",
    )
    uv = torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)  # [h*w, 2]
    q = sample_bilinear(qmap[..., memory.layout.slice(name)], uv.to(qmap.device))
    pred = _unit(memory.decode(name, q).float())  # [h*w, d]
    real = grid.reshape(-1, d).float().to(pred.device)
    ok = real.norm(dim=-1) > 0
    voc = _unit(vocabulary.float().to(pred.device))  # [K, d]
    if voc.shape[0] < 2:  # nothing to rank against
        return pred.new_zeros(0, voc.shape[0]), torch.zeros(0, voc.shape[0], dtype=torch.bool)
    k = vocabulary_top_k(voc.shape[0])
    return rank_margins(pred[ok] @ voc.T, k), rank_margins(_unit(real[ok]) @ voc.T, k) > 0


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
    calibration = dict(calibration or {})
    grids = {n: list(v[1]) for n, v in calibration.items()}
    samples: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in calibration}
    counts = dict.fromkeys(calibration, 0)

    def on_view(k: int, qmap: torch.Tensor) -> None:
        with torch.no_grad():
            for name, (vocab, _) in calibration.items():
                grid = grids[name][k] if k < len(grids[name]) else None
                if grid is None or counts[name] >= max_calibration_entries:
                    continue
                margins, pos = calibration_samples(memory, name, qmap, grid, vocab)
                samples[name].append((margins, pos))
                counts[name] += margins.numel()

    lifted, vis = lift_queries(memory, cameras, backend=backend, on_view=on_view)
    temps = {}
    for name, parts in samples.items():
        if parts:
            margins = torch.cat([m for m, _ in parts])
            if margins.numel():
                temps[name] = fit_temperature(margins, torch.cat([y for _, y in parts]))
    return GroundingIndex(lifted, vis, temps, len(cameras), memory_sha)


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
