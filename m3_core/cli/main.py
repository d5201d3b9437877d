"""Entry point of the ``m3`` console script.

Each verb lives in ``m3_core/cli/<verb>.py`` and provides ``add_arguments(parser)`` and
``run(args) -> int``. Verb modules import lazily so ``m3 --help`` stays fast. Errors the user
can fix (``M3Error``) and errors of the file system (``OSError``: full disk, permissions) print
one readable line, shortened when it quotes a long input, and exit 2; Ctrl-C exits 130; a
reader that closed the output pipe (``m3 info | head``) ends the command quietly with 141, the
status a shell reports for SIGPIPE.
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    "export": "write a memory's Gaussians as a standard 3DGS PLY (viewers, converters)",
    "synth": "generate a synthetic RGB-D room dataset to try the pipeline without a robot",
}
MAX_MESSAGE = 400  # characters of an error line; longer ones keep both ends
SIGPIPE_STATUS = 128 + 13


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line; past ``limit`` characters its middle is replaced by a count."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]}...[{len(text) - head - tail:,} characters]...{text[-tail:]}"


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    names = [n for n in (exc.filename, exc.filename2) if n is not None]
    return f"{what}: {' -> '.join(map(str, names))}" if names else what


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
        description = getattr(module, "DESCRIPTION", help_text)
        p = sub.add_parser(verb, help=help_text, description=description)
        module.add_arguments(p)
        modules[verb] = module
    return parser, modules


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        code = int(modules[args.verb].run(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return SIGPIPE_STATUS
    except M3Error as exc:
        message = shorten(str(exc))
    except OSError as exc:
        message = shorten(_os_error(exc))
    except KeyboardInterrupt:
        print(f"m3 {args.verb}: interrupted", file=sys.stderr)
        return 130
    print(f"m3 {args.verb}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
