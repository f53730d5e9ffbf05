"""The face search as Python functions: build, add, remove, search (the CLI calls these).

Each function takes folders and paths, does the whole job and returns a report; the
command line only parses flags and prints. See the package docstring for examples.

Photos: ``preparer`` is a ``common.faces.FacePreparer`` or a detector name (``"auto"``,
``"mtcnn"``, ``"center"``). The index records how its photos were cut (``faces`` in
``index.json``); adding photos uses that preparation and refuses another one
(:class:`PreparationError`, nothing written), and searches use it unless a detector is
named (``face_search.inputs``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from common.io import interrupts
from face_search import inputs
from face_search.index import store
from face_search.encoder import CodeEncoder, encoder_for_index
from face_search.errors import GalleryInputError, PreparationError, UnknownIdError
from face_search.index import GalleryIndex
from common.io.progress import Progress
from face_search.inputs import PROGRESS_SECONDS, done_line
from face_search.searcher import FaceSearcher, QueryResult  # noqa: F401 (part of the API)


@dataclass
class GalleryReport:
    """What a build or an add did."""

    index_dir: str
    added: int
    total: int
    identities: int
    num_bits: int
    kind: str
    seconds: float
    skipped: list[inputs.Skipped] = field(default_factory=list)
    ids: np.ndarray | None = None


def _add_galleries(index: GalleryIndex, encoder: CodeEncoder, galleries: Sequence[str],
                   report: inputs.InputReport, progress: Progress | None,
                   preparer: Any, where: str) -> np.ndarray:
    """Encode every usable face of ``galleries`` into ``index``; returns the new ids.

    Labels: pickle rows keep theirs; a photo gets its identity's label in the index, or
    for a new identity one more than the largest label so far. Photos are cut as the
    index records (PreparationError for another preparation, before any is read); the
    first photos record their preparation in ``index.faces``.
    """
    units, skipped = inputs.plan(list(galleries), gallery=True)
    if any(unit.kind == "photo" for unit in units):
        if index.faces is None and preparer is None and index.any_source_ends_with(
                inputs.PHOTO_EXTENSIONS):
            raise PreparationError(
                f"{where}: holds photos added before indexes recorded how their photos were "
                "cut, so new photos cannot be checked to be cut the same way: name the "
                "detector they were cut with (--detector center or mtcnn, or a preparer in "
                "Python), which the index then records; nothing was added")
        preparer = inputs.gallery_preparer(preparer, index.faces, where)
    report.skipped += skipped
    if progress is not None:
        progress.set_total(len(units))
    book = index.identity_labels()
    next_label = int(index.labels.max()) + 1 if len(index) else 0
    codes, identities, labels, sources = [], [], [], []
    photos_added = False
    with interrupts.deferred():  # Ctrl-C between batches, never inside TensorFlow
        for batch in inputs.read_batches(units, report, preparer, progress):
            interrupts.check()
            photos_added = photos_added or any(label is None for label in batch.labels)
            codes.append(encoder.encode_faces(batch.faces))
            for identity, label in zip(batch.identities, batch.labels):
                if label is None:
                    if identity not in book:
                        book[identity] = next_label
                    label = book[identity]
                book.setdefault(identity, int(label))
                next_label = max(next_label, int(label) + 1)
                labels.append(int(label))
            identities += batch.identities
            sources += batch.sources
            if progress is not None:
                progress.advance(faces=len(batch.sources))
        interrupts.check()
    if not codes:
        return np.zeros(0, np.int64)
    ids = index.add_columns(np.concatenate(codes), identities, labels, sources)
    if photos_added and index.faces is None:  # saved with the index, or not at all
        index.faces = inputs.preparation_record(preparer)
    return ids


def _add_and_save(index: GalleryIndex, encoder: CodeEncoder, galleries: Sequence[str],
                  path: str, progress_label: str | None, preparer: Any,
                  start: float, refuse_empty: bool = False) -> GalleryReport:
    """Add ``galleries`` to ``index`` (a progress line on stderr when ``progress_label``),
    save it to ``path`` and report (build and add share this tail). ``refuse_empty``
    (build): GalleryInputError instead of saving an index of no face, ``path`` untouched."""
    report = inputs.InputReport()
    meter = (Progress(progress_label, None, sys.stderr, every_seconds=PROGRESS_SECONDS)
             if progress_label else None)
    ids = _add_galleries(index, encoder, galleries, report, meter, preparer, path)
    if meter is not None:
        meter.finish(done_line(meter))
    if refuse_empty and not len(index):
        raise GalleryInputError(
            f"{', '.join(galleries)}: no usable face to index"
            f"{inputs.skipped_words(report.skipped) or ' (the pickle files hold no row)'}; "
            f"nothing was written to {path}")
    index.save(path)
    return GalleryReport(path, len(ids), len(index), len(index.identity_counts()),
                         index.num_bits, index.kind, time.perf_counter() - start,
                         report.skipped, ids)


def build_index(model: str | CodeEncoder, galleries: Sequence[str], index_dir: str,
                kind: str = "exact", checkpoint: str = "best_map", progress: bool = False,
                preparer: Any = None) -> GalleryReport:
    """Encode every face of ``galleries`` with ``model`` and save a new index to ``index_dir``.

    Args:
        model: an export folder, a run folder, or a :class:`CodeEncoder`.
        galleries: photo galleries, photo folders, photo files or pickle folders.
        index_dir: output folder: new, empty, or an index (replaced atomically).
        kind: "exact" (flat scan) or "mih" (multi-index hashing; exact too).
        checkpoint: the slot of a run folder.
        progress: print a progress line to stderr every few seconds.
        preparer: photos only: a ``common.faces.FacePreparer`` or a detector name
            (default ``"auto"``); the index records its preparation.

    Raises:
        GalleryInputError: a gallery cannot be read (``inputs.plan``), or not one face of
            them is usable (every input skipped): no index of 0 faces is written, and an
            index already in ``index_dir`` is left as it was.
    """
    start = time.perf_counter()
    index_dir = store.check_index_dir(index_dir)  # refuse before minutes of encoding
    encoder = model if isinstance(model, CodeEncoder) else CodeEncoder.from_path(model, checkpoint)
    index = GalleryIndex.create(encoder.num_bits, kind)
    index.model = encoder.describe()
    return _add_and_save(index, encoder, galleries, index_dir, "build" if progress else None,
                         preparer, start, refuse_empty=True)


def add_to_index(index_dir: str, galleries: Sequence[str], model: str | CodeEncoder | None = None,
                 checkpoint: str | None = None, progress: bool = False,
                 preparer: Any = None) -> GalleryReport:
    """Add the faces of ``galleries`` to the index in ``index_dir`` (same model checked).

    Photos are cut as the index's photos were (its recorded preparation) unless
    ``preparer`` (a ``FacePreparer`` or a detector name) is given; one that cuts otherwise
    is refused before any photo is read.

    Raises:
        PreparationError: ``preparer`` cuts faces otherwise than the index records, or
            the recorded preparation cannot be made here (mtcnn not installed); the index
            is left as it was.
        ModelPathError: ``model`` is not the index's model.
    """
    start = time.perf_counter()
    with store.locked(index_dir) as path:
        index = GalleryIndex.load(path)
        encoder = encoder_for_index(index, model, path, checkpoint)
        return _add_and_save(index, encoder, galleries, path, "add" if progress else None,
                             preparer, start)


def remove_from_index(index_dir: str, ids: Iterable[int] = (),
                      identities: Iterable[str] = ()) -> int:
    """Remove items by gallery id and/or identity; returns how many were removed.

    Raises:
        UnknownIdError: an id is not in the index, or an identity has no item
            (nothing is removed).
    """
    with store.locked(index_dir) as path:
        index = GalleryIndex.load(path)
        chosen = list(ids)  # as given: an id beyond int64 is unknown (GalleryIndex.remove)
        for name in identities:
            found = index.ids_of_identities([name])
            if not len(found):
                raise UnknownIdError(f"identity {name!r} has no item in the index")
            chosen += found.tolist()
        removed = index.remove(chosen)
        if removed:
            index.save(path)
    return removed


def search(queries: str | Sequence[str] | np.ndarray, index: str | GalleryIndex,
           model: str | CodeEncoder | None = None, top_k: int = 10,
           radius: int | None = None, preparer: Any = None) -> list[QueryResult]:
    """Search ``queries`` (paths, or uint8 (N, 32, 32, 3) faces) in ``index`` (a folder or a
    :class:`GalleryIndex`) with ``model`` (default: the model the index records); photos
    are cut as the index records unless ``preparer`` (a ``FacePreparer`` or a detector
    name) is given, with a warning logged when it cuts otherwise (:class:`FaceSearcher`)."""
    searcher = FaceSearcher(index, model, preparer=preparer)
    if isinstance(queries, np.ndarray):
        return searcher.search_faces(queries, top_k, radius)
    return searcher.search_paths([queries] if isinstance(queries, str) else list(queries),
                                 top_k, radius)


def index_summary(index_dir: str) -> dict[str, Any]:
    """What an index folder holds (count, bits, kind, identities, model, how its photos
    were prepared) without loading the model."""
    index, manifest = GalleryIndex.load_saved(index_dir)  # IndexFolderError when missing or damaged
    counts = index.identity_counts()
    return {"index_dir": os.path.abspath(index_dir), "count": len(index),
            "num_bits": index.num_bits, "kind": index.kind, "next_id": index.next_id,
            "identities": len(counts), "saved_at": manifest.get("saved_at"),
            "faces": index.faces,  # how its photos were prepared (None: not recorded)
            "model": None if index.model is None else {  # the check's data is not for reading
                k: v for k, v in index.model.items() if k != "probe_relaxed"}}
