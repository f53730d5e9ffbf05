"""Gallery faces read from photos (face_search.service.gallery_faces): a photo in which no
face is found is prepared once, and its "no face" remembered like a face; the caller can
tell beforehand which requests need a photo prepared."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from common.faces import FaceNotFoundError
from face_search.errors import UnknownIdError
from face_search.service.gallery_faces import GalleryFaces


class Index:
    def __init__(self, sources: dict[int, str]) -> None:
        self.sources = sources

    def item(self, gallery_id: int) -> SimpleNamespace:
        if gallery_id not in self.sources:
            raise UnknownIdError(f"gallery id {gallery_id} is not in the index")
        return SimpleNamespace(source=self.sources[gallery_id])


class CountingPreparer:
    """Finds a face in face.jpg only; counts the photos it prepares."""

    def __init__(self) -> None:
        self.prepared: list[str] = []

    def prepare_file(self, path: str) -> SimpleNamespace:
        self.prepared.append(path)
        if not path.endswith("face.jpg"):
            raise FaceNotFoundError(path, "no face found")
        return SimpleNamespace(face=np.full((32, 32, 3), 7, np.uint8))


@pytest.fixture
def faces(tmp_path):
    for name in ("face.jpg", "landscape.jpg"):
        (tmp_path / name).write_bytes(b"a photo")
    preparer = CountingPreparer()
    index = Index({1: str(tmp_path / "face.jpg"), 2: str(tmp_path / "landscape.jpg"),
                   3: str(tmp_path / "missing.jpg"), 4: str(tmp_path / "rows.pkl") + "#0"})
    return GalleryFaces(index, lambda: preparer), preparer, tmp_path


def test_a_photo_without_a_face_is_prepared_once(faces):
    gallery, preparer, root = faces
    assert gallery.needs_photo(2)
    assert gallery.png(2) is None and gallery.png(2) is None
    assert preparer.prepared == [str(root / "landscape.jpg")]
    assert not gallery.needs_photo(2)  # remembered: no work for the next request


def test_a_face_is_prepared_once_and_missing_files_are_not_remembered(faces):
    gallery, preparer, root = faces
    assert gallery.needs_photo(1)
    first = gallery.png(1)
    assert first is not None and first.startswith(b"\x89PNG") and gallery.png(1) == first
    assert preparer.prepared == [str(root / "face.jpg")] and not gallery.needs_photo(1)
    assert gallery.png(3) is None  # no such file: nothing prepared, nothing remembered
    assert preparer.prepared == [str(root / "face.jpg")] and gallery.needs_photo(3)
    (root / "missing.jpg").write_bytes(b"now there")
    assert gallery.png(3) is None and preparer.prepared[-1] == str(root / "missing.jpg")
    assert not gallery.needs_photo(4)  # a pickle row: no photo to prepare
    with pytest.raises(UnknownIdError):
        gallery.needs_photo(99)
