"""Ground-truth feature targets of a dataset and the PSC banks built from them."""

from __future__ import annotations

import torch

from m3_core.errors import InvalidInputError
from m3_core.train.config import FeatureSpec
from m3_core.types import ModelSpec


def load_targets(dataset, spec: FeatureSpec, indices: list[int]) -> dict[int, torch.Tensor]:
    """Feature grids {frame index: [h, w, d] float16} for ``indices``; clear error if missing."""
    from m3_core.data.features import FeatureStore

    store = FeatureStore(dataset.root, spec.name)
    stems = [dataset.frames[i].image_path.stem for i in indices]
    missing = [s for s in stems if not store.exists(s)]
    if missing:
        raise InvalidInputError(
            f"feature {spec.name!r}: {len(missing)} of {len(stems)} frames have no features in "
            f"{dataset.root / 'features' / spec.name} (first: {missing[0]}); run "
            f"`m3 extract {dataset.root} --model {spec.name}` or provide them there"
        )
    return {i: store.load(s).to(torch.float16) for i, s in zip(indices, stems)}


def model_spec(spec: FeatureSpec, grids: dict[int, torch.Tensor]) -> ModelSpec:
    dims = {int(g.shape[-1]) for g in grids.values()}
    if len(dims) != 1:
        raise InvalidInputError(f"feature {spec.name!r}: frames disagree on dimension {dims}")
    channels, threshold = spec.resolved()
    return ModelSpec(spec.name, dims.pop(), channels, threshold)


def build_bank(
    grids: dict[int, torch.Tensor],
    threshold: float,
    *,
    max_inputs: int | None,
    max_rows: int | None,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, float]:
    """(PSC bank [t, d], threshold used): Algorithm 1 over all non-zero vectors of the grids,
    in frame order, at ``threshold`` or lowered until t <= ``max_rows``."""
    from m3_core.memory.psc import collect_features
    from m3_core.memory.psc_cap import build_psc_capped

    feats = collect_features([grids[i].float() for i in sorted(grids)])  # [n, d]
    if feats.shape[0] == 0:
        raise InvalidInputError("no non-zero feature vectors to build a PSC bank from")
    bank, _, used = build_psc_capped(
        feats.to(device), threshold, max_rows, max_inputs=max_inputs, generator=generator
    )
    return bank, used
