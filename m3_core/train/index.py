"""After training: build and save the memory's grounding index from its training views.

The index (:mod:`m3_core.memory.grounding`) lifts the rendered queries onto the Gaussians
over the training views and fits, per closed-vocabulary feature (one with a
``vocabulary.npz``), the relevancy temperature against the real feature maps. It is saved as
``MEM/grounding.safetensors``, tied to the memory tensors just saved.
"""

from __future__ import annotations

from pathlib import Path

import torch

from m3_core.memory.grounding import GroundingIndex, build_grounding_index, memory_sha


def write_grounding_index(
    memory,
    dataset,
    view_ids: list[int],
    targets: dict[str, dict[int, torch.Tensor]],
    out_dir: str | Path,
    *,
    backend: str = "auto",
) -> GroundingIndex:
    """Build the index over frames ``view_ids`` (their real feature grids in ``targets``) and
    save it beside the memory saved in ``out_dir``."""
    from m3_core.data.features import FeatureStore

    device = memory.gaussians["means"].device
    cameras = [dataset.frames[i].camera for i in view_ids]
    calibration = {}
    for name in memory.layout.names:
        vocab = FeatureStore(dataset.root, name).vocabulary()
        grids = targets.get(name, {})
        if vocab is not None and grids:
            calibration[name] = (
                vocab[1].to(device),
                [grids[i].to(device) if i in grids else None for i in view_ids],
            )
    index = build_grounding_index(
        memory, cameras, calibration=calibration, backend=backend, memory_sha=memory_sha(out_dir)
    )
    index.save(out_dir)
    return index
