"""A gallery index of packed face codes: the codes in memory, their search, their folder.

Modules, from the bottom: ``codes`` (the packed layout), ``columns`` (identity and source
columns), ``exact`` (faiss's flat scan, ties by position), ``mih`` (multi-index hashing),
``gallery`` (:class:`GalleryIndex`, which holds and searches them), ``manifest``
(``index.json`` and its checksum), ``folder_snapshot`` (one save's files, read whole) and
``store`` (the folder on disk, written atomically). ``store`` deals in arrays and a
manifest, never in a ``GalleryIndex``: the gallery builds itself from what it reads.

Loaded on first use, like ``face_search``: importing ``face_search.index.codes`` must not
load faiss.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"GalleryIndex": "gallery", "Hit": "gallery", "ItemMeta": "gallery", "KINDS": "gallery"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'face_search.index' has no attribute {name!r}")
    return getattr(importlib.import_module(f"face_search.index.{_EXPORTS[name]}"), name)
