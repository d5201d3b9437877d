"""Entry point of the ``m3`` console script.

Each verb lives in ``m3_core/cli/<verb>.py`` and provides ``add_arguments(parser)`` and
``run(args) -> int``. Verb modules import lazily so ``m3 --help`` stays fast. Errors the user
can fix (``M3Error``) print one readable line and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from m3_core.errors import M3Error

VERBS: dict[str, str] = {
    "train": "fit a memory (Gaussians + principal queries) to a posed dataset",
    "render": "render RGB, depth and decoded features at a frame or pose",
    "eval": "PSNR/SSIM and feature distances on the test views",
    "info": "summarise a memory: Gaussians, channel layout, PSC sizes, bytes",
    "extract": "compute foundation-model features for a dataset (precomputed format)",
    "ground": "text -> 3D objects in the memory's world frame",
    "query": "text -> relevancy heatmap at a pose",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="m3", description="3D spatial multimodal memory (M3)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    modules: dict[str, object] = {}
    for verb, help_text in VERBS.items():
        try:
            module = importlib.import_module(f"m3_core.cli.{verb}")
        except ModuleNotFoundError as exc:
            if exc.name != f"m3_core.cli.{verb}":
                raise
            continue  # verb not built yet
        p = sub.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(p)
        modules[verb] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        return int(modules[args.verb].run(args) or 0)
    except M3Error as exc:
        print(f"m3 {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"m3 {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
