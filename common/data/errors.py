"""Errors and warnings raised while reading data sets in the original layout."""

from __future__ import annotations

from common.errors import ProjectError
import os


class DataFormatError(ProjectError, ValueError):
    """A data file or folder is not in the expected layout.

    The message always starts with the offending path, then says why.

    Args:
        path: the file or folder at fault.
        reason: what is wrong with it, in words.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DataFormatWarning(UserWarning):
    """Data that loads but is suspicious (e.g. test identities missing from train)."""
