"""Queries against a loaded index: faces, photos (paths or uploaded bytes), folders.

Why a class: a service loads the index and the model once and answers many queries;
:class:`FaceSearcher` holds both (and the face preparer) and returns one
:class:`QueryResult` per query face, with ``error`` set instead of raising for a photo
that cannot be used.

Query photos are cut as the index records its photos were (``GalleryIndex.faces``), since
codes of faces cut two different ways are not comparable; a caller who names a detector
or gives a preparer that cuts otherwise gets it, and a warning (logged, and kept in
``preparation_warning``). An index without the record (pickle rows only, or saved before
it existed) takes detector ``"auto"`` as before.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from absl import logging

from common.io import interrupts
from face_search import inputs
from face_search.encoder import CodeEncoder, encoder_for_index
from face_search.errors import PreparationError
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
        ``preparer``: a ``common.faces.FacePreparer`` or a detector name (default: the
        preparation the index records, else detector "auto"; see the module docstring).
        The preparer is made when the first photo needs it (:attr:`preparer`)."""
        self.index_dir = os.path.abspath(index) if isinstance(index, str) else None
        self.index = GalleryIndex.load(index) if isinstance(index, str) else index
        self.encoder = encoder_for_index(self.index, model, self.index_dir or "the index",
                                         checkpoint)
        self._given = preparer
        self._preparer: Any = None
        self._index_preparer: Any = None
        self._lock = threading.Lock()
        self.preparation_warning: str | None = None  # set when photos are cut otherwise

    @property
    def preparer(self) -> Any:
        """The face preparer query photos go through (module docstring), made on first use.

        Raises:
            PreparationError: no detector was named and the index's recorded one cannot
                be made here (mtcnn not installed).
        """
        with self._lock:
            if self._preparer is None:
                where = self.index_dir or "the index"
                preparer, warning = inputs.query_preparer(self._given, self.index.faces, where)
                if warning:
                    logging.warning(warning)
                self._preparer, self.preparation_warning = preparer, warning
            return self._preparer

    @property
    def index_preparer(self) -> Any:
        """A preparer that cuts faces as the index's photos were cut, to show a gallery
        photo's face as it was coded: the query preparer when it cuts the same way, else
        one made from the record; None when the index records none, or its preparation
        cannot be made here (logged once)."""
        record = self.index.faces
        if record is None:
            return None
        with self._lock:
            if self._preparer is not None and self.preparation_warning is None:
                return self._preparer  # it cuts as recorded
            if self._index_preparer is None:
                try:
                    self._index_preparer = inputs.recorded_preparer(
                        record, self.index_dir or "the index")
                except PreparationError as exc:
                    logging.warning(f"gallery faces are shown as the query preparer cuts "
                                    f"them: {exc}")
                    self._index_preparer = False
            return self._index_preparer or None

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
        preparer = self.preparer
        name = source or (photo if isinstance(photo, str) else "uploaded photo")
        try:
            prepared = preparer.prepare_file(photo)
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
        preparer = self.preparer if any(u.kind == "photo" for u in units) else None
        report = inputs.InputReport()
        meter = (Progress("query", len(units), sys.stderr, every_seconds=PROGRESS_SECONDS)
                 if progress else None)
        results = [QueryResult(s.source, None, [], error=s.reason) for s in skipped]
        with interrupts.deferred():
            for batch in inputs.read_batches(units, report, preparer, meter):
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
