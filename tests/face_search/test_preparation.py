"""How an index's photos were cut into faces: recorded in ``index.json`` (``faces``), used
for adds and queries, and never silently mixed.

Codes of faces cut two different ways are not comparable: a gallery built with centre
crops and queried with MTCNN (installed later, picked by "auto") retrieved worse without a
word. The encoder here is numpy (a fixed random projection, no model to train) and every
photo is cut by the centre crop, which is always available; the preparations differ in
``center_fraction``, so each test can tell which one cut a face. A recorded MTCNN that is
not installed is simulated by hiding the package (``mtcnn_importable``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import PIL
import pytest
from PIL import Image

from checkout import ROOT
from common.data.pickle_folder import write_pickle_folder
from common.data.preprocess import to_rows
from common.faces import FacePreparer
from face_search import api, inputs
from face_search.encoder import CodeEncoder
from face_search.errors import PreparationError
from face_search.index import GalleryIndex
from face_search.searcher import FaceSearcher

BITS = 64
FRACTION = 0.8  # the gallery's centre crops; the default is 0.5
WEIGHTS = np.random.default_rng(0).normal(size=(32 * 32 * 3, BITS))
OLD_INDEX = os.path.join(ROOT, "tests", "data", "old_format", "index")
MTCNN_RECORD = {"detector": "mtcnn", "face_size": 32, "face_scale": 1.2, "level_eyes": True}


def numpy_encoder(bits: int = BITS) -> CodeEncoder:
    weights = WEIGHTS[:, :bits]

    def relax(faces: np.ndarray) -> np.ndarray:
        return (faces.reshape(len(faces), -1) / 255.0 - 0.5) @ weights

    def encode(faces: np.ndarray) -> np.ndarray:
        return np.packbits(relax(faces) >= 0, axis=1, bitorder="little")

    return CodeEncoder("/models/numpy", "export", bits, encode, {"method": "numpy"},
                       relax=relax)


def photo_gallery(folder, people=("ann", "bob"), per_person: int = 2, seed: int = 1) -> str:
    """``folder/<person>/<i>.png``: 96x96 noise (lossless), so crops of other sizes differ."""
    rng = np.random.default_rng(seed)
    for person in people:
        os.makedirs(folder / person, exist_ok=True)
        for i in range(per_person):
            pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / person / f"{i}.png")
    return str(folder)


def folder_bytes(folder) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def encoder() -> CodeEncoder:
    return numpy_encoder()


@pytest.fixture
def built(tmp_path, encoder):
    """An index of 4 photos cut with centre crops of FRACTION; (index folder, gallery)."""
    gallery = photo_gallery(tmp_path / "gallery")
    api.build_index(encoder, [gallery], str(tmp_path / "idx"),
                    preparer=FacePreparer("center", center_fraction=FRACTION))
    return str(tmp_path / "idx"), gallery


def recorded(index_dir: str) -> dict | None:
    with open(os.path.join(index_dir, "index.json"), encoding="utf-8") as f:
        return json.load(f).get("faces")


def hide_mtcnn(monkeypatch) -> None:
    import common.faces.preparer

    monkeypatch.setattr(common.faces.preparer, "mtcnn_importable", lambda: False)


# ------------------------------------------------------------------ the record
def test_an_index_of_photos_records_how_they_were_cut(built):
    index_dir, _ = built
    expected = {"detector": "center", "center_fraction": FRACTION, "face_size": 32,
                "versions": {"pillow": PIL.__version__}}
    assert recorded(index_dir) == expected
    assert GalleryIndex.load(index_dir).faces == expected
    assert api.index_summary(index_dir)["faces"] == expected


def test_an_index_of_pickle_rows_records_nothing_until_photos_come(tmp_path, encoder):
    faces = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    write_pickle_folder(tmp_path / "rows", to_rows(faces).astype(np.float32),
                        np.array([0, 0, 1, 1, 2, 2]))
    index_dir = str(tmp_path / "idx")
    api.build_index(encoder, [str(tmp_path / "rows")], index_dir)
    assert recorded(index_dir) is None and GalleryIndex.load(index_dir).faces is None
    with open(os.path.join(index_dir, "index.json"), encoding="utf-8") as f:
        assert "faces" not in json.load(f)  # absent, as in indexes saved before the record
    api.add_to_index(index_dir, [photo_gallery(tmp_path / "photos")], encoder,
                     preparer=FacePreparer("center", center_fraction=FRACTION))
    assert recorded(index_dir)["center_fraction"] == FRACTION  # the first photos record it


def test_the_record_makes_a_preparer_that_cuts_the_same_faces(built):
    _, gallery = built
    record = recorded(built[0])
    remade = FacePreparer.from_preparation(record)
    photo = os.path.join(gallery, "ann", "0.png")
    np.testing.assert_array_equal(
        remade.prepare_file(photo).face,
        FacePreparer("center", center_fraction=FRACTION).prepare_file(photo).face)
    for broken in ({"detector": "sideways"}, {**record, "center_fraction": "half"},
                   {**record, "face_size": 64}, {"detector": "mtcnn", "face_size": 32}):
        with pytest.raises(ValueError):
            FacePreparer.from_preparation(broken)


# ------------------------------------------------------------------ adding photos
def test_photos_cut_otherwise_are_refused_and_the_index_is_unchanged(built, encoder,
                                                                    tmp_path, monkeypatch):
    index_dir, _ = built
    hide_mtcnn(monkeypatch)  # refusing a named mtcnn needs no mtcnn package
    more = photo_gallery(tmp_path / "more", people=("cy",), seed=3)
    before = folder_bytes(index_dir)
    neighbours = sorted(os.listdir(tmp_path))
    for other in (FacePreparer("center"), "mtcnn"):  # a named detector is never loaded
        with pytest.raises(PreparationError) as refused:
            api.add_to_index(index_dir, [more], encoder, preparer=other)
        message = str(refused.value)
        assert f"prepared with detector center (center_fraction {FRACTION})" in message
        assert ("center (center_fraction 0.5)" in message if other != "mtcnn"
                else "mtcnn (face_scale 1.2, eyes levelled)" in message)
        assert "nothing was added" in message and "build a new index" in message
        assert folder_bytes(index_dir) == before
        assert sorted(os.listdir(tmp_path)) == neighbours  # no temporary folder left
    assert len(GalleryIndex.load(index_dir)) == 4


def test_photos_added_without_a_preparer_are_cut_as_the_index_records(built, encoder,
                                                                     tmp_path):
    index_dir, _ = built
    more = photo_gallery(tmp_path / "more", people=("cy",), per_person=1, seed=3)
    photo = os.path.join(more, "cy", "0.png")
    for preparer in (None, "center"):  # the name alone keeps the recorded crop settings
        added = api.add_to_index(index_dir, [more], encoder, preparer=preparer)
        index = GalleryIndex.load(index_dir)
        face = FacePreparer("center", center_fraction=FRACTION).prepare_file(photo).face
        np.testing.assert_array_equal(index.codes[index.ids == added.ids[0]],
                                      encoder.encode_faces(face[None]))
    assert recorded(index_dir)["center_fraction"] == FRACTION


# ------------------------------------------------------------------ queries
def test_a_query_without_a_detector_is_cut_as_the_index_records(built, encoder, caplog):
    index_dir, gallery = built
    photo = os.path.join(gallery, "bob", "1.png")
    recorded_face = FacePreparer("center", center_fraction=FRACTION).prepare_file(photo).face
    default_face = FacePreparer("center").prepare_file(photo).face
    assert not np.array_equal(recorded_face, default_face)  # the test can tell them apart
    with caplog.at_level(logging.WARNING):
        searcher = FaceSearcher(index_dir, encoder)
        result = searcher.search_photo(photo, top_k=1)
        np.testing.assert_array_equal(searcher.preparer.prepare_file(photo).face,
                                      recorded_face)
        np.testing.assert_array_equal(result.code, encoder.encode_faces(recorded_face[None])[0])
        assert (result.hits[0].source, result.hits[0].distance) == (photo, 0)
        [through_api] = api.search([photo], index_dir, encoder, top_k=1)
        assert through_api.hits == result.hits
    assert searcher.preparation_warning is None and not caplog.records


def test_a_detector_named_that_cuts_otherwise_is_used_with_a_warning(built, encoder, caplog):
    index_dir, gallery = built
    photo = os.path.join(gallery, "bob", "1.png")
    with caplog.at_level(logging.WARNING):
        searcher = FaceSearcher(index_dir, encoder, preparer=FacePreparer("center"))
        result = searcher.search_photo(photo, top_k=1)
    default_face = FacePreparer("center").prepare_file(photo).face
    np.testing.assert_array_equal(result.code, encoder.encode_faces(default_face[None])[0])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [searcher.preparation_warning]
    assert f"prepared with detector center (center_fraction {FRACTION})" in warnings[0]
    assert "query photos are prepared with detector center (center_fraction 0.5)" in warnings[0]
    assert "two different preparations" in warnings[0]
    # the detector's name alone keeps the recorded crop settings: no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        named = FaceSearcher(index_dir, encoder, preparer="center")
        assert named.preparer.center_fraction == FRACTION
    assert named.preparation_warning is None and not caplog.records


def test_a_recorded_detector_not_installed_here_fails_clearly(built, encoder, monkeypatch):
    index_dir, gallery = built
    index = GalleryIndex.load(index_dir)
    index.faces = dict(MTCNN_RECORD)
    index.save(index_dir)
    hide_mtcnn(monkeypatch)
    photo = os.path.join(gallery, "ann", "0.png")
    with pytest.raises(PreparationError) as failed:
        FaceSearcher(index_dir, encoder).search_photo(photo)
    message = str(failed.value)
    assert "prepared with detector mtcnn (face_scale 1.2, eyes levelled)" in message
    assert "mtcnn package is not installed" in message and "[faces]" in message
    assert "--detector" in message
    with pytest.raises(PreparationError, match="build a new index"):
        api.add_to_index(index_dir, [gallery], encoder)
    # naming a detector accepts the mismatch: searched, with the warning
    searcher = FaceSearcher(index_dir, encoder, preparer="center")
    assert searcher.search_photo(photo, top_k=1).error is None
    assert "mtcnn" in searcher.preparation_warning


def test_an_old_index_without_the_record_loads_and_searches_photos(tmp_path, monkeypatch):
    path = str(tmp_path / "old")
    shutil.copytree(OLD_INDEX, path)
    index = GalleryIndex.load(path)
    assert index.faces is None and len(index) == 16
    hide_mtcnn(monkeypatch)  # "auto", as before the record: the centre crop here
    index.model = None  # searched with the numpy encoder (the old export needs TensorFlow)
    searcher = FaceSearcher(index, numpy_encoder(index.num_bits))
    photo = os.path.join(photo_gallery(tmp_path / "photos"), "ann", "0.png")
    result = searcher.search_photo(photo, top_k=3)
    assert result.error is None and len(result.hits) == 3
    assert searcher.preparer.method == "center" and searcher.preparation_warning is None
    index.save(path)  # saved again without photos: still no record
    assert recorded(path) is None and GalleryIndex.load(path).faces is None


def test_a_query_preparer_for_an_index_without_a_record_is_the_one_asked_for():
    preparer, warning = inputs.query_preparer("center", None, "idx")
    assert preparer.method == "center" and warning is None


def test_photos_added_before_the_record_need_their_detector_named(built, encoder, tmp_path):
    """An index saved before the record that holds photos: how they were cut is unknown,
    so new photos are refused until a detector is named (which the index then records)."""
    index_dir, _ = built
    index = GalleryIndex.load(index_dir)
    index.faces = None  # as an index saved before the record
    index.save(index_dir)
    assert recorded(index_dir) is None
    more = photo_gallery(tmp_path / "more", people=("cy",), per_person=1, seed=3)
    before = folder_bytes(index_dir)
    with pytest.raises(PreparationError, match="holds photos added before indexes recorded"):
        api.add_to_index(index_dir, [more], encoder)
    assert folder_bytes(index_dir) == before
    api.add_to_index(index_dir, [more], encoder,
                     preparer=FacePreparer("center", center_fraction=FRACTION))
    assert recorded(index_dir)["center_fraction"] == FRACTION


def test_a_source_scan_finds_photo_extensions_in_any_case_without_decoding():
    from face_search.index.columns import TextColumn

    column = TextColumn()
    column.extend(["/d/part_000.pkl#12", "a", "", "/p/ann/0.JPEG"])
    assert column.any_ends_with(inputs.PHOTO_EXTENSIONS)
    assert not column.keep(np.array([True, True, True, False])).any_ends_with(
        inputs.PHOTO_EXTENSIONS)  # rows, a one-letter and an empty source: no photo
    assert not TextColumn().any_ends_with([".png"])
    assert column.any_ends_with(["#12"]) and not column.any_ends_with([".pkl"])
