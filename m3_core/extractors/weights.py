"""Finding model weights on the local disk; hubs are never contacted.

Search order for a model ``<name>`` (first hit wins):
    1. the explicit ``weights`` argument (``--weights``): a file, a folder, or
       ``local-dir:/folder`` (open_clip);
    2. ``$M3_WEIGHTS_DIR/<name>`` (a folder) or ``$M3_WEIGHTS_DIR/<name>.<ext>`` (a file);
    3. the family's own cache (HF hub cache for a default repo id), read with offline flags.
When nothing is found, :class:`MissingWeightsError` names the model, every place looked at,
and how to provide the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from m3_core.errors import MissingWeightsError

WEIGHTS_ENV = "M3_WEIGHTS_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def set_offline() -> None:
    """Ask huggingface_hub / transformers never to reach the network (before they import)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def local_candidates(
    name: str, weights: str | os.PathLike | None
) -> tuple[Path | None, list[str]]:
    """(the first existing local path for ``name``, the places looked at, in order).

    ``weights`` given: only that path is considered (a missing one is an error right away).
    """
    if weights is not None:
        raw = str(weights)
        path = Path(raw.removeprefix("local-dir:")).expanduser()
        if not path.exists():
            raise MissingWeightsError(
                f"weights for model '{name}' not found at {path} (from --weights / weights=)"
            )
        return path, [str(path)]
    looked: list[str] = []
    root = os.environ.get(WEIGHTS_ENV)
    if root:
        base = Path(root).expanduser()
        for cand in [base / name, *(base / f"{name}{s}" for s in WEIGHT_SUFFIXES)]:
            looked.append(str(cand))
            if cand.exists():
                return cand, looked
    else:
        looked.append(f"${WEIGHTS_ENV}/{name} (${WEIGHTS_ENV} not set)")
    return None, looked


def hf_cached_snapshot(repo_id: str, filename: str = "config.json") -> Path | None:
    """The local snapshot folder of ``repo_id`` in the HF hub cache, or None (no network)."""
    set_offline()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    hit = try_to_load_from_cache(repo_id, filename)
    return Path(hit).parent if isinstance(hit, str) else None


def missing_weights(name: str, looked: list[str], how: str) -> MissingWeightsError:
    """The one error for absent weights: the model, where we looked, how to provide them."""
    places = "; ".join(looked) if looked else "nowhere"
    return MissingWeightsError(
        f"no weights for model '{name}' (looked in: {places}). Provide them with "
        f"--weights PATH (Python: weights=PATH) or put them at ${WEIGHTS_ENV}/{name}; {how}. "
        "Nothing is downloaded at run time."
    )


def resolve_hf_folder(name: str, weights: str | os.PathLike | None, repo: str, how: str) -> Path:
    """A transformers model folder (holding config.json) for ``name``: the explicit path,
    ``$M3_WEIGHTS_DIR/<name>``, or the HF hub cache snapshot of ``repo`` (offline)."""
    path, looked = local_candidates(name, weights)
    if path is None:
        looked.append(f"HF cache {repo}")
        path = hf_cached_snapshot(repo)
    if path is None:
        raise missing_weights(name, looked, how)
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise MissingWeightsError(
            f"weights for model '{name}' at {path} must be a transformers folder with "
            f"config.json (save_pretrained output); {how}"
        )
    return path


def hf_image_stats(folder: Path, mean: tuple, std: tuple) -> tuple[tuple, tuple]:
    """(image_mean, image_std) from the folder's preprocessor_config.json, else the defaults."""
    import json

    p = Path(folder) / "preprocessor_config.json"
    if p.is_file():
        cfg = json.loads(p.read_text(encoding="utf-8"))
        mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def build_hf_extractor(
    cls, name: str, how: str, *, weights, device, repo, short_side, max_side, stride
):
    """Shared body of the transformers builders (siglip, dinov2): offline folder lookup, the
    extractor, and a check that a requested stride is the model's patch size."""
    from m3_core.errors import InvalidInputError

    set_offline()
    folder = resolve_hf_folder(name, weights, repo, how)
    ext = cls(folder, device=device, short_side=short_side, max_side=max_side)
    if stride is not None and stride != ext.stride:
        raise InvalidInputError(f"{name}: stride is the patch size {ext.stride}, got {stride}")
    return ext
