"""Reading the project's own JSON files without letting a damaged one crash a command.

Why: a JSON file can be truncated by a full disk, edited by hand, or replaced by anything;
``json.load`` answers most of that with a ``ValueError`` the callers already handle, but
not everything: nesting a few thousand levels deep exhausts Python's stack
(``RecursionError``, an internal error), and a huge file costs memory before it is refused.
:func:`load` and :func:`loads` turn both into a ``ValueError`` naming the reason, so every
reader's existing "damaged: ..." path (and, for a checkpoint index, its rebuild) applies.
"""

from __future__ import annotations

import json
import os
from typing import Any

MAX_BYTES = 64 * 2**20  # the largest JSON file this project writes is a few MB


def loads(text: str | bytes) -> Any:
    """``json.loads``, with nesting too deep for the stack a ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def load(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> Any:
    """The JSON value in ``path``; ValueError for a file that is too large, not UTF-8, not
    JSON or nested too deeply (OSError when it cannot be read)."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError(f"{size} bytes, more than a file of this project holds ({max_bytes})")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return loads(text)
