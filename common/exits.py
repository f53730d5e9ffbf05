"""How every command line of the project stops: one ``error:`` line and an exit code.

Kept free of flag definitions so that any entry module can use it (absl flags are
global: two modules defining ``--model_dir`` must never be imported together).
"""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_USAGE = 2        # bad flags, bad data, a run folder that does not fit
EXIT_FAILED = 1       # the work itself failed (e.g. non-finite loss)
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one ``error:`` line to stderr and exit (no traceback)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_no_arguments(argv: list[str]) -> None:
    """Reject positional arguments (absl passes them through to ``main``)."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (all settings are --flags)")
