"""Builds, queries and removals that have nothing to work on are refused with a clear error
(exit 2), never carried out as an empty result.

``build --gallery pkx/train`` (a pickle part beside a sub-folder) over an index of 200
faces replaced it with an empty one, exit 0, and a query of that folder printed nothing,
exit 0; ``remove --ids 99999999999999999999`` failed with an internal OverflowError. The
encoder here is numpy (a fixed random projection, no model to train).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from checkout import ROOT
from common.data.pickle_folder import write_pickle_folder
from common.data.preprocess import to_rows
from face_search import api
from face_search.encoder import CodeEncoder
from face_search.errors import GalleryInputError, UnknownIdError
from face_search.index import GalleryIndex

BITS = 16
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def numpy_encoder() -> CodeEncoder:
    weights = np.random.default_rng(0).normal(size=(32 * 32 * 3, BITS))

    def relax(faces: np.ndarray) -> np.ndarray:
        return (faces.reshape(len(faces), -1) / 255.0 - 0.5) @ weights

    def encode(faces: np.ndarray) -> np.ndarray:
        return np.packbits(relax(faces) >= 0, axis=1, bitorder="little")

    return CodeEncoder("/models/numpy", "export", BITS, encode, {"method": "numpy"},
                       relax=relax)


def folder_bytes(folder) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))}


@pytest.fixture
def built(tmp_path) -> str:
    """An index of 6 faces (a pickle folder of 3 identities); its folder."""
    faces = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3)).astype(np.float32)
    write_pickle_folder(tmp_path / "train", to_rows(faces), np.arange(6) % 3)
    report = api.build_index(numpy_encoder(), [str(tmp_path / "train")], str(tmp_path / "idx"))
    assert report.total == 6
    return str(tmp_path / "idx")


def test_a_pickle_folder_with_a_sub_folder_leaves_the_index_as_it_was(built, tmp_path):
    pkx = tmp_path / "pkx" / "train"
    write_pickle_folder(pkx, to_rows(np.zeros((2, 32, 32, 3), np.float32)), np.zeros(2, int))
    os.makedirs(pkx / "extra")
    before = folder_bytes(built)
    with pytest.raises(GalleryInputError, match=rf"^{pkx}: holds both pickle files "
                                                r"\(part_000\.pkl\) and sub-folders \(extra\)"):
        api.build_index(numpy_encoder(), [str(pkx)], built)
    with pytest.raises(GalleryInputError, match="holds both pickle files"):
        api.search([str(pkx)], built, model=numpy_encoder())
    assert folder_bytes(built) == before


def test_a_build_with_no_usable_face_is_refused_not_saved_empty(built, tmp_path):
    """Every input skipped (a damaged pickle part; an unreadable photo): the build names
    the gallery and why, and writes nothing, over an index or into a new folder."""
    damaged = tmp_path / "damaged"
    os.makedirs(damaged)
    (damaged / "part_000.pkl").write_bytes(b"not a pickle")
    photos = tmp_path / "photos"
    os.makedirs(photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    before = folder_bytes(built)
    for gallery, source, preparer in [(damaged, damaged / "part_000.pkl", None),
                                      (photos, photos / "broken.jpg", "center")]:
        for target in (built, str(tmp_path / "new")):
            with pytest.raises(GalleryInputError) as refused:
                api.build_index(numpy_encoder(), [str(gallery)], target, preparer=preparer)
            message = str(refused.value)
            assert message.startswith(f"{gallery}: no usable face to index (1 input(s) "
                                      f"skipped: {source}: "), message
            assert message.endswith(f"); nothing was written to {os.path.abspath(target)}")
    assert folder_bytes(built) == before and not os.path.exists(tmp_path / "new")
    added = api.add_to_index(built, [str(damaged)], model=numpy_encoder())  # adds nothing
    assert (added.added, added.total, len(added.skipped)) == (0, 6, 1)


def test_ids_beyond_int64_are_unknown_ids(built):
    with pytest.raises(UnknownIdError) as refused:
        api.remove_from_index(built, ids=[99999999999999999999])
    assert str(refused.value) == "gallery ids not in the index: 99999999999999999999"
    with pytest.raises(UnknownIdError) as refused:
        api.remove_from_index(built, ids=[2, 2**64, -2**70, 40], identities=["1"])
    assert str(refused.value) == ("gallery ids not in the index: -1180591620717411303424, "
                                  "40, 18446744073709551616")
    index = GalleryIndex.load(built)
    assert len(index) == 6  # all or nothing
    with pytest.raises(UnknownIdError, match="not in the index: 9223372036854775808$"):
        index.remove([0, 2**63])
    assert len(index) == 6 and index.remove([0, 0]) == 1
    assert api.remove_from_index(built, ids=[5], identities=["1"]) == 3  # 5; 1 and 4


@pytest.mark.slow  # starts processes
def test_the_command_line_says_so_with_exit_2(built, tmp_path):
    os.makedirs(tmp_path / "people" / "ann")
    for args, message in [
            (("remove", "--index", built, "--ids", "99999999999999999999"),
             "error: gallery ids not in the index: 99999999999999999999\n"),
            (("query", "--index", built, str(tmp_path / "people")),
             f"error: {tmp_path / 'people'}: no photo or pickle file to read in it (a folder "
             "with sub-folders is a photo gallery DIR/<identity>/<photo>, and its sub-folders "
             "hold none)\n")]:
        done = subprocess.run([sys.executable, "-m", "face_search", *args], env=ENV,
                              capture_output=True, text=True, timeout=300)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", message), args
    assert len(GalleryIndex.load(built)) == 6
