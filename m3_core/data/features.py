"""Precomputed per-frame feature maps: the on-disk format, its store, and bilinear sampling.

On-disk format (one folder per foundation model ``<name>``, e.g. ``clip``)::

    DATA/features/<name>/<image stem>.npy   float16 or float32 [h, w, D], any grid size
                                            (row 0 = top of the image, column 0 = left);
                                            cell (i, j) covers the image region
                                            [j/w, (j+1)/w] x [i/h, (i+1)/h] (normalised)
    DATA/features/<name>/vocabulary.npz     optional: ``texts`` str [K], ``embeddings`` [K, D]
                                            (text embeddings in the same space, for queries)
    DATA/features/<name>/meta.json          optional: {"model": ..., "dim": D, ...extractor
                                            settings}; ``dim`` if present must match the maps

Every map of a model has the same D; values must be finite. Writes are atomic.

Sampling: :func:`sample_bilinear` reads a grid at normalised image coordinates uv in [0, 1]
(u along the width) with pixel-centre alignment (``align_corners=False``), clamping at the
border, so a low-resolution feature grid and a full-resolution rendered map sampled at the same
uv see the same image point.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3_core.errors import InvalidInputError
from m3_core.io import atomic_write_bytes, atomic_write_text
from m3_core.names import check_name


def list_feature_names(dataset_root: str | Path) -> list[str]:
    """Names of the feature folders of a dataset that hold at least one map or a meta.json."""
    d = Path(dataset_root) / "features"
    if not d.is_dir():
        return []
    return sorted(
        p.name
        for p in d.iterdir()
        if p.is_dir() and (any(p.glob("*.npy")) or (p / "meta.json").is_file())
    )


class FeatureStore:
    """The feature maps of one model (``<dataset root>/features/<name>/``); see module doc."""

    def __init__(self, root: str | Path, name: str) -> None:
        self.name = check_name(name, "feature name")
        self.dir = Path(root) / "features" / name
        self._dim: int | None = None

    def path(self, stem: str) -> Path:
        return self.dir / f"{check_name(stem, 'image stem')}.npy"

    def exists(self, stem: str) -> bool:
        return self.path(stem).is_file()

    def stems(self) -> list[str]:
        """Image stems that have a map, sorted."""
        return sorted(p.stem for p in self.dir.glob("*.npy")) if self.dir.is_dir() else []

    def meta(self) -> dict[str, Any] | None:
        p = self.dir / "meta.json"
        if not p.is_file():
            return None
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"{p} is not valid JSON: {e}") from None
        if not isinstance(m, dict):
            raise InvalidInputError(f"{p} must hold a JSON object")
        return m

    def save_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_text(self.dir / "meta.json", json.dumps(meta, indent=1, sort_keys=True))
        self._dim = None

    @property
    def dim(self) -> int:
        """Feature dimension D (from meta.json, else from the first map's header)."""
        if self._dim is None:
            m = self.meta()
            if m is not None and "dim" in m:
                self._dim = int(m["dim"])
            else:
                stems = self.stems()
                if not stems:
                    raise InvalidInputError(f"no feature maps in {self.dir}")
                arr = np.load(self.path(stems[0]), mmap_mode="r", allow_pickle=False)
                if arr.ndim != 3:
                    raise InvalidInputError(f"{self.path(stems[0])} must be [h, w, D]")
                self._dim = int(arr.shape[2])
        return self._dim

    def _known_dim(self) -> int | None:
        try:
            return self.dim
        except InvalidInputError:
            return None

    def load(self, stem: str) -> torch.Tensor:
        """The map of image ``stem`` as float32 [h, w, D]."""
        p = self.path(stem)
        if not p.is_file():
            raise InvalidInputError(f"no '{self.name}' features for frame {stem!r} ({p})")
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InvalidInputError(f"cannot read feature map {p}: {e}") from None
        self._validate(arr, str(p))
        return torch.from_numpy(arr.astype(np.float32, copy=False))

    def _validate(self, arr: np.ndarray, where: str) -> None:
        if arr.ndim != 3 or min(arr.shape) < 1:
            raise InvalidInputError(f"{where}: feature map must be [h, w, D], got {arr.shape}")
        if arr.dtype not in (np.float16, np.float32, np.float64):
            raise InvalidInputError(f"{where}: feature map must be float, got {arr.dtype}")
        d = self._known_dim()
        if d is not None and arr.shape[2] != d:
            raise InvalidInputError(f"{where}: feature dim {arr.shape[2]} != store dim {d}")
        if not np.isfinite(arr).all():
            raise InvalidInputError(f"{where}: feature map has NaN or infinite values")

    def save(self, stem: str, array: np.ndarray | torch.Tensor) -> Path:
        """Write the map of image ``stem`` (float16 kept, other floats stored as float32)."""
        arr = _as_numpy(array)
        self._validate(arr, f"features '{self.name}/{stem}'")
        if arr.dtype != np.float16:
            arr = arr.astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        p = self.path(stem)
        atomic_write_bytes(p, buf.getvalue())
        self._dim = int(arr.shape[2]) if self._dim is None else self._dim
        return p

    def vocabulary(self) -> tuple[list[str], torch.Tensor] | None:
        """(texts [K], embeddings float32 [K, D]) or None when there is no vocabulary."""
        p = self.dir / "vocabulary.npz"
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                texts, emb = z["texts"], z["embeddings"]
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise InvalidInputError(f"cannot read vocabulary {p}: {e}") from None
        self._check_vocab(texts, emb, str(p))
        return [str(t) for t in texts], torch.from_numpy(emb.astype(np.float32))

    def _check_vocab(self, texts: np.ndarray, emb: np.ndarray, where: str) -> None:
        if texts.ndim != 1 or emb.ndim != 2 or len(texts) != len(emb):
            raise InvalidInputError(
                f"{where}: need texts [K] and embeddings [K, D], got {texts.shape}, {emb.shape}"
            )
        d = self._known_dim()
        if d is not None and emb.shape[1] != d:
            raise InvalidInputError(f"{where}: embedding dim {emb.shape[1]} != store dim {d}")
        if not np.isfinite(emb).all():
            raise InvalidInputError(f"{where}: embeddings have NaN or infinite values")

    def save_vocabulary(self, texts: list[str], embeddings: np.ndarray | torch.Tensor) -> None:
        t = np.array([str(s) for s in texts], dtype=np.str_)
        e = _as_numpy(embeddings).astype(np.float32)
        self._check_vocab(t, e, f"vocabulary of '{self.name}'")
        buf = io.BytesIO()
        np.savez(buf, texts=t, embeddings=e)
        atomic_write_bytes(self.dir / "vocabulary.npz", buf.getvalue())


def sample_bilinear(grid: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``grid`` at normalised image coordinates ``uv``.

    grid [h, w, D] with uv [P, 2] -> [P, D]; or grid [B, h, w, D] with uv [B, P, 2] -> [B, P, D].
    uv = (u, v) in [0, 1], u along the width; texel (i, j) has its centre at
    ((j + 0.5) / w, (i + 0.5) / h). Outside the centres the border value is used. Equal to
    ``F.grid_sample(..., mode="bilinear", padding_mode="border", align_corners=False)`` at
    ``2 * uv - 1``, differentiable in grid and uv, but gathers rows of a channels-last grid
    (no [D, h, w] copy).
    """
    if grid.ndim == 3 and uv.ndim == 2:
        return sample_bilinear(grid[None], uv[None])[0]
    if grid.ndim != 4 or uv.ndim != 3 or uv.shape[-1] != 2 or uv.shape[0] != grid.shape[0]:
        raise InvalidInputError(
            "sample_bilinear needs grid [h, w, D] + uv [P, 2] or grid [B, h, w, D] + "
            f"uv [B, P, 2], got {tuple(grid.shape)} and {tuple(uv.shape)}"
        )
    b, h, w, d = grid.shape
    uv = uv.float() if uv.dtype in (torch.float16, torch.bfloat16) else uv  # keep precision
    x = (uv[..., 0] * w - 0.5).clamp(0, w - 1)  # [B, P] texel coordinates
    y = (uv[..., 1] * h - 0.5).clamp(0, h - 1)
    x0f, y0f = x.detach().floor(), y.detach().floor()
    wx = (x - x0f)[..., None].to(grid.dtype)  # [B, P, 1]
    wy = (y - y0f)[..., None].to(grid.dtype)
    x0, y0 = x0f.long(), y0f.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    base = torch.arange(b, device=grid.device)[:, None] * (h * w)  # [B, 1]
    rows = grid.reshape(b * h * w, d)

    def gather(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:  # [B, P, D]
        return rows.index_select(0, (base + yi * w + xi).reshape(-1)).reshape(*yi.shape, d)

    top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
