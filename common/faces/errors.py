"""The two ways a photo can fail to give a face: it is not a usable image, or it shows none.

Both are :class:`common.errors.DataFormatError` (a ``ValueError``) whose message
starts with the file's name (or ``uploaded data``), so every command of the project,
through :func:`common.cli.runner.run_main`, answers them with one ``error:`` line and exit 2.
"""

from __future__ import annotations

import os

from common.errors import DataFormatError

UPLOADED = "uploaded data"  # how bytes without a file name are named in messages


def source_name(source: str | bytes | os.PathLike | None) -> str:
    """How messages name an image source: its path, or ``uploaded data`` for bytes."""
    if source is None or isinstance(source, (bytes, bytearray, memoryview)):
        return UPLOADED
    return os.fsdecode(source)


class ImageReadError(DataFormatError):
    """A file or upload that cannot be used as an image: not an image, truncated,
    corrupt, empty, unreadable, or larger than the pixel limit."""


class FaceNotFoundError(DataFormatError):
    """The face detector found no face in an image."""
