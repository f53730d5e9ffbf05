"""Queries against a loaded index: faces, photos (paths or uploaded bytes), folders.

Why a class: a service loads the index and the model once and answers many queries;
:class:`FaceSearcher` holds both (and the face preparer) and returns one
:class:`QueryResult` per query face, with ``error`` set instead of raising for a photo
that cannot be used.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from common.io import interrupts
from face_search import inputs
from face_search.encoder import CodeEncoder, encoder_for_index
from face_search.index import GalleryIndex, Hit
from common.io.progress import Progress
from face_search.inputs import PROGRESS_SECONDS, done_line


@dataclass
class QueryResult:
    """The hits of one query face (``error`` set, no hits, when the photo was unusable)."""

    source: str
    identity: str | None
    hits: list[Hit]
    error: str | None = None
    face_box: tuple[int, int, int, int] | None = None  # (x, y, w, h) in the photo
    face_note: str | None = None                       # e.g. several faces, largest kept
    code: np.ndarray | None = field(default=None, repr=False, compare=False)  # packed query code

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "identity": self.identity, "error": self.error,
                "face_box": list(self.face_box) if self.face_box else None,
                "face_note": self.face_note,
                "hits": [dict(rank=r, **h.to_dict()) for r, h in enumerate(self.hits, 1)]}


class FaceSearcher:
    """An index and its model, loaded once, answering queries (for services and scripts)."""

    def __init__(self, index: str | GalleryIndex, model: str | CodeEncoder | None = None,
                 checkpoint: str | None = None, preparer: Any = None) -> None:
        """``index``: a folder or a GalleryIndex; ``model``: default the one it records;
        ``preparer``: a ``common.faces.FacePreparer`` (default: detector "auto")."""
        self.index_dir = os.path.abspath(index) if isinstance(index, str) else None
        self.index = GalleryIndex.load(index) if isinstance(index, str) else index
        self.encoder = encoder_for_index(self.index, model, self.index_dir or "the index",
                                         checkpoint)
        self._preparer = preparer

    @property
    def preparer(self) -> Any:
        """The face preparer photos go through (detector "auto" unless one was given)."""
        if self._preparer is None:
            self._preparer = inputs.photo_preparer(None)
        return self._preparer

    def search_faces(self, faces: np.ndarray, top_k: int = 10, radius: int | None = None,
                     sources: Sequence[str] | None = None,
                     identities: Sequence[str | None] | None = None) -> list[QueryResult]:
        """Hits of uint8 (N, 32, 32, 3) faces: top ``top_k`` or, with ``radius``, every item
        within it (at most ``top_k``; 0 = no limit), by (distance, gallery id)."""
        packed = self.encoder.encode_faces(faces)
        if radius is None:
            hits = self.index.search(packed, top_k)
        else:
            hits = [h[:top_k] if top_k else h for h in self.index.within_radius(packed, radius)]
        sources = sources or [f"face {i}" for i in range(len(packed))]
        identities = identities or [None] * len(packed)
        return [QueryResult(s, i, h, code=c)
                for s, i, h, c in zip(sources, identities, hits, packed)]

    def search_photo(self, photo: str | bytes, top_k: int = 10, radius: int | None = None,
                     source: str | None = None) -> QueryResult:
        """Hits of the face in one photo (a path or the file's bytes); an unusable photo
        gives a result with ``error`` set and no hits."""
        if self._preparer is None:
            self._preparer = inputs.photo_preparer(None)
        name = source or (photo if isinstance(photo, str) else "uploaded photo")
        try:
            prepared = self._preparer.prepare_file(photo)
        except inputs.photo_errors() as exc:
            return QueryResult(name, None, [], error=str(exc) or type(exc).__name__)
        result = self.search_faces(np.asarray(prepared.face)[None], top_k, radius, [name])[0]
        if prepared.box:
            x, y, w, h = (int(v) for v in prepared.box)
            result.face_box = (x, y, w, h)
        else:
            result.face_box = None
        result.face_note = getattr(prepared, "note", None) or None
        return result

    def search_paths(self, paths: Sequence[str], top_k: int = 10, radius: int | None = None,
                     progress: bool = False) -> list[QueryResult]:
        """Hits of every face in photo files, photo folders and pickle folders; each
        unusable input gives a result with ``error`` set."""
        units, skipped = inputs.plan(list(paths), gallery=False)
        if self._preparer is None and any(u.kind == "photo" for u in units):
            self._preparer = inputs.photo_preparer(None)
        report = inputs.InputReport()
        meter = (Progress("query", len(units), sys.stderr, every_seconds=PROGRESS_SECONDS)
                 if progress else None)
        results = [QueryResult(s.source, None, [], error=s.reason) for s in skipped]
        with interrupts.deferred():
            for batch in inputs.read_batches(units, report, self._preparer, meter):
                interrupts.check()
                results += self.search_faces(batch.faces, top_k, radius, batch.sources,
                                             batch.identities)
                if meter is not None:
                    meter.advance(faces=len(batch.sources))
            interrupts.check()
        if meter is not None:
            meter.finish(done_line(meter))
        results += [QueryResult(s.source, None, [], error=s.reason) for s in report.skipped]
        return results
