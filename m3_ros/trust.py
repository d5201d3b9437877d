"""Trust boundaries: what arrives over DDS (goals, archives, service requests, topics) is
untrusted. Names must match the one ``m3_core.names.SAFE_NAME`` rule; paths must lie inside
configured roots once resolved (symlinks and ``..`` included). Every node checks with these
two functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from m3_core.errors import InvalidInputError
from m3_core.names import check_name


def check_id(value: str, what: str = "id") -> str:
    """``value`` when it is a safe single file name (``m3_core.names.SAFE_NAME``), else
    InvalidInputError naming ``what``."""
    return check_name(value, what)


def resolved_roots(roots: Iterable[str | Path]) -> list[Path]:
    """The non-empty roots, expanded and resolved (they need not exist yet)."""
    return [Path(r).expanduser().resolve() for r in roots if str(r).strip()]


def confine(
    path: str | Path, roots: Iterable[str | Path], what: str = "path", *, inside: bool = False
) -> Path:
    """``path`` resolved, when it is one of ``roots`` or inside one (``inside``: strictly
    inside; relative paths are taken relative to the first root); else InvalidInputError.
    Resolving follows symlinks, so a link inside a root that points out of it is refused."""
    allowed = resolved_roots(roots)
    if not allowed:
        raise InvalidInputError(f"{what} {str(path)!r} refused: no allowed folder is configured")
    text = str(path)
    if not text.strip() or "\x00" in text:
        raise InvalidInputError(f"{what} is empty or malformed")
    p = Path(text).expanduser()
    full = (p if p.is_absolute() else allowed[0] / p).resolve()
    if not any((full != r or not inside) and full.is_relative_to(r) for r in allowed):
        shown = ", ".join(str(r) for r in allowed)
        raise InvalidInputError(f"{what} {text!r} is outside the allowed folders ({shown})")
    return full
