"""One rule for every name that becomes a file or folder name: frames, feature folders,
recordings, memories, archives. A plain file name of at most 128 characters from letters,
digits, ``_``, ``.``, ``-``, not starting with ``.`` or ``-`` (so never ``..``, a path, a hidden
file or an option). ``m3_ros.trust.check_id`` applies it to what arrives over DDS."""

from __future__ import annotations

import re

from m3_core.errors import InvalidInputError

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_name(value: object, what: str = "name") -> str:
    """``value`` when it is a safe name (``SAFE_NAME``, the whole string), else
    InvalidInputError naming ``what``."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        shown = value if len(str(value)) <= 80 else f"{str(value)[:80]}..."
        raise InvalidInputError(
            f"bad {what} {shown!r}: use letters, digits, '_', '.', '-' (at most 128, no path)"
        )
    return value
