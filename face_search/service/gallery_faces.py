"""The 32x32 face of a gallery item, read back from the source the index recorded.

Why: a search page shows the faces it found, but an index holds codes, not pictures.
Each item's ``source`` says where its face came from: ``FILE#ROW`` (a row of a pickle
file in the original layout) or a photo's path. Both are read again on demand, as the
index was built: the pickle row rounded to uint8, the photo through the face preparer the
caller gives, which the service makes from the preparation the index records
(``SearchService.gallery_preparer``), so that the face shown is the face that was coded.
Items whose source is gone, or was never a file, have no face (:meth:`png` gives None).

Only sources recorded in the index are ever opened (the caller names a gallery id, never
a path). Loaded pickle files and finished PNGs are cached (least recently used first out),
so the ten faces of a result page cost one file read, not ten; so is a source that gave no
face (a photo where the detector finds none), so that asking again costs nothing. A photo
takes a decode and a detection: :meth:`GalleryFaces.needs_photo` tells the caller (the web
app, which runs those through a gate of their own) before it does the work.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
from PIL import Image

from face_search.index import GalleryIndex
from face_search.inputs import is_photo, photo_errors

CACHED_FILES = 8      # pickle files: 1,000 faces of 3 KiB each in the usual layout
CACHED_PNGS = 2048    # about 3 KiB each
NO_FACE = b""         # cached for a source that gave no face


def png_bytes(face: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) image as PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(np.asarray(face, np.uint8), "RGB").save(out, format="PNG")
    return out.getvalue()


def pickle_row(source: str) -> tuple[str, int] | None:
    """(file, row) of a ``FILE#ROW`` source, None for any other form."""
    path, hash_sign, row = source.rpartition("#")
    if not hash_sign or not path or not row.isdigit() or not row.isascii():
        return None
    return path, int(row)


class _Lru(OrderedDict):
    """A dict that forgets its least recently used entries beyond ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_recent(self, key: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class GalleryFaces:
    """The faces of an index's items (thread-safe; see the module docstring).

    Args:
        index: the gallery index whose sources are read.
        preparer: called with no argument each time a photo must be prepared; returns
            a ``common.faces.FacePreparer`` that cuts faces as the index's photos were cut
            (so a pickle-only gallery never loads one).
    """

    def __init__(self, index: GalleryIndex, preparer: Callable[[], Any]) -> None:
        self._index = index
        self._preparer = preparer
        self._lock = threading.Lock()        # the pickle files: one reader at a time
        self._pngs_lock = threading.Lock()   # the PNGs: never held during work
        self._files = _Lru(CACHED_FILES)
        self._pngs = _Lru(CACHED_PNGS)

    def has_face(self, source: str) -> bool:
        """Whether ``source`` names a file this class can read a face from (cheap)."""
        found = pickle_row(source)
        if found is not None:
            return os.path.isfile(found[0])
        return is_photo(source) and os.path.isfile(source)

    def needs_photo(self, gallery_id: int) -> bool:
        """Whether :meth:`png` would read a photo through the face preparer (its answer is
        not cached and its source is a photo); cheap, never blocks on other work.

        Raises:
            UnknownIdError: no such gallery id.
        """
        source = self._index.item(gallery_id).source
        with self._pngs_lock:
            if source in self._pngs:
                return False
        return pickle_row(source) is None and is_photo(source)

    def png(self, gallery_id: int) -> bytes | None:
        """The item's face as a 32x32 PNG; None when its source cannot give one.

        Raises:
            UnknownIdError: no such gallery id.
        """
        source = self._index.item(gallery_id).source
        with self._pngs_lock:
            cached = self._pngs.get_recent(source)
        if cached is not None:
            return cached or None
        if not self.has_face(source):
            return None  # no such file (now): not cached, it may come back
        face = self._face(source)
        data = NO_FACE if face is None else png_bytes(face)
        with self._pngs_lock:
            self._pngs.put(source, data)
        return data or None

    def _face(self, source: str) -> np.ndarray | None:
        found = pickle_row(source)
        if found is not None:
            faces = self._pickle_faces(found[0])
            return faces[found[1]] if faces is not None and found[1] < len(faces) else None
        try:
            return np.asarray(self._preparer().prepare_file(source).face)
        except photo_errors():
            return None

    def _pickle_faces(self, path: str) -> np.ndarray | None:
        """Every face of one pickle file as uint8 (n, 32, 32, 3); None if unreadable."""
        from common.data.errors import DataFormatError
        from common.data.pickle_folder import load_pickle_file
        from common.data.preprocess import to_nhwc

        with self._lock:  # one reader per file at a time; others wait for its result
            faces = self._files.get_recent(path)
            if faces is None:
                try:
                    x, _ = load_pickle_file(path)
                except (DataFormatError, OSError):
                    return None
                faces = np.clip(np.rint(to_nhwc(x)), 0, 255).astype(np.uint8)
                self._files.put(path, faces)
        return faces
