"""The memory: channel layout, PSC banks (Algorithm 1), GMA decoding, and ``Memory``.

Public API::

    ChannelLayout.from_specs(specs)                  per-model slices of the query vector
    build_psc(features, threshold, ...)              Algorithm 1 (chunked) -> (bank, kept)
    build_psc_capped(features, threshold, max_rows)  Algorithm 1, threshold lowered to fit
    extend_psc(bank, new_features, threshold)        incremental bank growth -> (bank', added)
    collect_features(grids)                          [h, w, d] grids -> rows [n, d]
    gma_decode(q, proj, bank, temperature)           Gaussian Memory Attention -> [..., d]
    Memory.create(config, gaussians, banks, seed=0)  / Memory.load(dir, device) / .save(dir)

Each fast path has a slow ``*_reference`` twin used by the tests.
"""

from m3_core.memory.gma import gma_decode, gma_decode_reference
from m3_core.memory.io import FORMAT_VERSION
from m3_core.memory.layout import ChannelLayout
from m3_core.memory.memory import GAUSSIAN_KEYS, Memory
from m3_core.memory.psc import (
    build_psc,
    build_psc_reference,
    collect_features,
    extend_psc,
    extend_psc_reference,
)
from m3_core.memory.psc_cap import build_psc_capped

__all__ = [
    "FORMAT_VERSION",
    "GAUSSIAN_KEYS",
    "ChannelLayout",
    "Memory",
    "build_psc",
    "build_psc_capped",
    "build_psc_reference",
    "collect_features",
    "extend_psc",
    "extend_psc_reference",
    "gma_decode",
    "gma_decode_reference",
]
