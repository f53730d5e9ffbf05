"""Face search: a gallery of binary face codes, searched by exact Hamming distance.

Command line (``python -m face_search --help``)::

    python -m face_search build --model exports/dcbh_synthetic \\
        --gallery data/synthetic/train --index indexes/synthetic
    python -m face_search query --index indexes/synthetic --top_k 5 data/synthetic/test

Python::

    from face_search import CodeEncoder, GalleryIndex, FaceSearcher, build_index, search

    build_index("exports/dcbh_synthetic", ["data/synthetic/train"], "indexes/synthetic")
    for result in search(["data/synthetic/test"], "indexes/synthetic", top_k=5):
        print(result.source, [(h.identity, h.distance) for h in result.hits])

    encoder = CodeEncoder.from_path("exports/dcbh_synthetic")   # or a run folder
    packed = encoder.encode_faces(faces)                         # uint8 (N, 32, 32, 3)
    index = GalleryIndex.create(encoder.num_bits, kind="exact")  # or "mih"
    ids = index.add(packed, [ItemMeta("alice", 0, "alice/1.jpg"), ...])
    hits = index.search(packed, k=10)   # [[Hit(gallery_id, distance, identity, label, source)]]
    index.save("indexes/mine"); index = GalleryIndex.load("indexes/mine")

    searcher = FaceSearcher("indexes/mine")  # index + the model it records, loaded once
    result = searcher.search_photo(photo_bytes, top_k=10)   # QueryResult(source, hits, error, ...)

Photos are cut into faces by ``common.faces.FacePreparer``; an index records how its photos
were cut (``index.faces``, ``"faces"`` in ``index.json``), adding photos cut otherwise is
refused (``PreparationError``) and queries are cut as recorded unless a detector or
preparer is named (then with a logged warning): codes of faces cut two ways do not compare.

Results are exact and ordered as the project's evaluator ranks (``common.metrics``,
``ties="index"``): by Hamming distance, equal distances by gallery id. Modules, from
the bottom: ``errors``; ``index/`` (the gallery index: packed codes, faiss flat scan,
multi-index hashing, ``GalleryIndex``, its folder on disk), ``encoder`` (a model's codes),
``inputs`` (photo and pickle folders); ``searcher`` (FaceSearcher); ``api``
(build/add/remove/search); ``report`` and ``service/`` (the search page and its HTTP API on
FastAPI: ``python -m face_search serve --index DIR``); ``__main__`` (the command line).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GalleryIndex": "face_search.index", "Hit": "face_search.index",
    "ItemMeta": "face_search.index", "KINDS": "face_search.index",
    "CodeEncoder": "face_search.encoder",
    "FaceSearcher": "face_search.searcher", "QueryResult": "face_search.searcher",
    "GalleryReport": "face_search.api", "build_index": "face_search.api",
    "add_to_index": "face_search.api", "remove_from_index": "face_search.api",
    "search": "face_search.api", "index_summary": "face_search.api",
    "SearchInputError": "face_search.errors", "IndexFolderError": "face_search.errors",
    "IndexBusyError": "face_search.errors", "ModelPathError": "face_search.errors",
    "GalleryInputError": "face_search.errors", "UnknownIdError": "face_search.errors",
    "PreparationError": "face_search.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import on first use: ``python -m face_search`` checks its flags before faiss or
    TensorFlow load."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'face_search' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
