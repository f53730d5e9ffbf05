"""Where a table cell's files live under the harness's output folder.

Kept apart from :mod:`common.reproduce.cells` (which trains and evaluates, so imports
TensorFlow) because tools that only read finished cells, such as ``bench/figures_unchanged.py``,
need the layout and nothing else: this module imports the standard library alone.
"""

from __future__ import annotations

import os

CELL_FILE = "cell.json"
CODES_FILE = "codes.npz"
RUN_FOLDER = "run"


def cell_dir(out: str, method: str, bits: int, seed: int = 0) -> str:
    """The cell's folder: ``cells/<row>_<bits>``, with ``_s<seed>`` for seeds other than 0."""
    return os.path.join(out, "cells", f"{method}_{bits}" + (f"_s{seed}" if seed else ""))
