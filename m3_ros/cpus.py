"""A node on CPUs of its own: the ``cpus`` parameter ("2-3", "0,2"; empty: any).

On a robot computer the memory server answers GroundObject within tens of milliseconds only
when nothing else (the nav stack, the trainer) takes its cores; pinning the server to its own
core and the rest elsewhere is the measured way to keep its p99 under 100 ms
(``benchmarks/bench_serving.py --server-cpus 0 --client-cpus 1``). ``pin_process`` moves every
thread the process already has (DDS's, the executor's) and, through them, every thread it
starts later (they inherit their creator's affinity). Linux only.
"""

from __future__ import annotations

import os

from m3_core.errors import InvalidInputError


def cpu_set(text: str) -> set[int]:
    """ "0,2-3" -> {0, 2, 3}; "" -> empty (no pinning). Malformed text raises."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise InvalidInputError(f"cpus: {part!r} is not a CPU number or range") from None
        if first < 0 or last < first:
            raise InvalidInputError(f"cpus: {part!r} is not a CPU number or range")
        cpus.update(range(first, last + 1))
    return cpus


def pin_process(cpus: set[int]) -> None:
    """Every thread of this process, and those they start later, on ``cpus`` only."""
    if not cpus:
        return
    if not hasattr(os, "sched_setaffinity"):
        raise InvalidInputError("cpus: this platform cannot pin a process to CPUs")
    usable = os.sched_getaffinity(0)
    if not cpus <= usable:
        raise InvalidInputError(
            f"cpus: {sorted(cpus - usable)} not available to this process (it may use "
            f"{sorted(usable)})"
        )
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    try:
        import torch

        torch.set_num_threads(max(1, min(torch.get_num_threads(), len(cpus))))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
