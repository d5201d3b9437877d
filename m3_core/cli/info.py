"""``m3 info MEM [--json]``: summarise a saved memory (Gaussians, channel layout, PSC sizes)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("memory", help="memory folder (memory.json + memory.safetensors)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # unreachable


def format_info(info: dict[str, Any]) -> str:
    """Human-readable table of :meth:`Memory.info`."""
    lines = [
        f"memory      {info['path'] or '(not saved)'}",
        f"gaussians   {info['num_gaussians']:,}   query dim {info['query_dim']}   "
        f"sh degree {info['sh_degree']}   tau {info['gma_temperature']:g}",
        f"parameters  {info['parameters']:,}   PSC rows {info['psc_rows']:,}   "
        f"on disk {_size(info['bytes_on_disk'])}",
    ]
    header = ("model", "dim", "channels", "slice", "theta", "PSC rows", "W_m")
    rows = [
        (
            m["name"],
            str(m["dim"]),
            str(m["query_channels"]),
            f"[{m['slice'][0]}:{m['slice'][1]})",
            f"{m['psc_threshold']:.2f}",
            f"{m['psc_size']:,}",
            "trained" if m["projection_trainable"] else "frozen",
        )
        for m in info["models"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines.append("")
    for r in [header, *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if not rows:
        lines.append("(no models)")
    if info["extra"]:
        lines.append("")
        lines.append("extra       " + json.dumps(info["extra"], sort_keys=True))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from m3_core.memory import Memory

    info = Memory.load(args.memory).info()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print(format_info(info))
    return 0
