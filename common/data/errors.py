"""Errors and warnings raised while reading data sets in the original layout.

:class:`DataFormatError` itself lives in common.errors (face detection raises it too); it is
importable from here and from ``common.data`` as ever.
"""

from __future__ import annotations

from common.errors import DataFormatError

__all__ = ["DataFormatError", "DataFormatWarning"]


class DataFormatWarning(UserWarning):
    """Data that loads but is suspicious (e.g. test identities missing from train)."""
