"""The project's error classes' common base, with the exit code each command gives for it.

Why: every command turns an error a user can cause into one ``error:`` line with exit code
2 (bad input) or 1 (the work itself failed), and a bug into an "internal error". Deciding
by class, from one TensorFlow-free base that every project error derives from, keeps that
decision right when a module moves (common.cli.runner.user_error).
"""

from __future__ import annotations

import os

EXIT_USAGE = 2
EXIT_FAILED = 1


class ProjectError(Exception):
    """An error a user's input or environment can cause: one ``error:`` line, exit 2."""

    exit_code = EXIT_USAGE


class WorkFailedError(ProjectError):
    """The work itself failed (a diverged training, a lost worker): exit 1."""

    exit_code = EXIT_FAILED


class FolderChangedError(ProjectError, ValueError):
    """An output folder changed while it was being replaced; it was left as it was."""


class DataFormatError(ProjectError, ValueError):
    """A data file or folder is not in the expected layout (or a photo gives no face).

    The message always starts with the offending path, then says why.

    Args:
        path: the file or folder at fault.
        reason: what is wrong with it, in words.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
