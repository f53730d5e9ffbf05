"""Gallery faces read from photos (face_search.service.gallery_faces): a photo in which no
face is found is prepared once, and its "no face" remembered like a face; the caller can
tell beforehand which requests need a photo prepared; the service cuts them as the index
records its photos were cut (the face that was coded), whatever preparer its uploads get."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from common.faces import FaceNotFoundError, FacePreparer
from face_search import api
from face_search.encoder import CodeEncoder
from face_search.errors import UnknownIdError
from face_search.index import GalleryIndex
from face_search.searcher import FaceSearcher
from face_search.service.gallery_faces import GalleryFaces
from face_search.service.web_api import SearchService


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


# ------------------------------------------------------------------ as the index records
FRACTION = 0.8  # the gallery's centre crops; the uploads' preparer below uses 0.5


def numpy_encoder(bits: int = 32) -> CodeEncoder:
    weights = np.random.default_rng(0).normal(size=(32 * 32 * 3, bits))

    def relax(faces: np.ndarray) -> np.ndarray:
        return (faces.reshape(len(faces), -1) / 255.0 - 0.5) @ weights

    return CodeEncoder("/models/numpy", "export", bits,
                       lambda f: np.packbits(relax(f) >= 0, axis=1, bitorder="little"),
                       {"method": "numpy"}, relax=relax)


@pytest.fixture
def photo_index(tmp_path):
    """An index of one photo (96x96 noise) cut with centre crops of FRACTION; (index
    folder, photo, encoder)."""
    photo = tmp_path / "gallery" / "ann" / "0.png"
    photo.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (96, 96, 3), np.uint8)).save(photo)
    encoder = numpy_encoder()
    api.build_index(encoder, [str(tmp_path / "gallery")], str(tmp_path / "idx"),
                    preparer=FacePreparer("center", center_fraction=FRACTION))
    return str(tmp_path / "idx"), str(photo), encoder


def thumbnail(service: SearchService) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(service.gallery_png("0"))))


def test_thumbnails_are_cut_as_the_index_records_whatever_the_uploads_get(photo_index):
    index_dir, photo, encoder = photo_index
    coded = FacePreparer("center", center_fraction=FRACTION).prepare_file(photo).face
    other = FacePreparer("center").prepare_file(photo).face
    assert not np.array_equal(coded, other)  # the test can tell the two cuts apart
    uploads_otherwise = SearchService(FaceSearcher(index_dir, encoder),
                                      preparer=FacePreparer("center"))
    assert uploads_otherwise.preparation_warning  # the uploads are cut otherwise ...
    np.testing.assert_array_equal(thumbnail(uploads_otherwise), coded)  # ... not the gallery
    searcher_otherwise = SearchService(FaceSearcher(index_dir, encoder,
                                                    preparer=FacePreparer("center")))
    assert searcher_otherwise.preparation_warning
    np.testing.assert_array_equal(thumbnail(searcher_otherwise), coded)
    as_recorded = SearchService(FaceSearcher(index_dir, encoder))
    assert as_recorded.preparation_warning is None
    np.testing.assert_array_equal(thumbnail(as_recorded), coded)


def test_without_a_record_thumbnails_are_cut_as_the_uploads(photo_index):
    """An index saved before the record: as before, the uploads' preparer cuts them."""
    index_dir, photo, encoder = photo_index
    index = GalleryIndex.load(index_dir)
    index.faces = None
    index.save(index_dir)
    service = SearchService(FaceSearcher(index_dir, encoder), preparer=FacePreparer("center"))
    assert service.preparation_warning is None
    np.testing.assert_array_equal(thumbnail(service),
                                  FacePreparer("center").prepare_file(photo).face)
