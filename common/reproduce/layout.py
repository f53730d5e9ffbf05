"""Where a table cell's files live under the harness's output folder.

Kept apart from :mod:`common.reproduce.cells` (which trains and evaluates, so imports
TensorFlow) because tools that only read finished cells, such as ``bench/figures_unchanged.py``,
need the layout and nothing else: this module imports the standard library alone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Iterator

CELL_FILE = "cell.json"
CODES_FILE = "codes.npz"
RUN_FOLDER = "run"
# The settings a deep cell was started with, written before its training starts: an
# interrupted cell resumes only with them (common.reproduce.cells.start_cell).
STARTED_FILE = "started.json"


def cell_dir(out: str, method: str, bits: int, seed: int = 0) -> str:
    """The cell's folder: ``cells/<row>_<bits>``, with ``_s<seed>`` for seeds other than 0."""
    return os.path.join(out, "cells", f"{method}_{bits}" + (f"_s{seed}" if seed else ""))


@contextlib.contextmanager
def replaced_whole(path: str) -> Iterator[str]:
    """A temporary path beside ``path`` to write, renamed onto ``path`` when the block ends
    (removed if it raises): a reader (another harness, ``--finished_only`` writing the
    tables while a table runs) sees the old file or the new one, never a part."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
