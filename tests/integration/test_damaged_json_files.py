"""Every JSON file the project reads, damaged every way a disk, an editor or an adversary
damages it: one clear error naming the file (or, where the file only tells whether a folder
is ours, a plain "no"), never an internal error.

The damages: nesting deep enough to exhaust Python's stack (``json`` raises RecursionError,
which no reader caught before), bytes that are not UTF-8, a truncated file, and a JSON value
of the wrong type. Each reader is one case: a new reader of a JSON file belongs here.
(``run_config.json`` and the checkpoint index: tests/common/runs/test_damaged_files.py.)
"""

from __future__ import annotations

import os

import pytest

from common.data import DataFormatError
from common.data.photo_output import META_FILE, is_previous_output
from common.io import json_files
from common.reproduce.cells import CellSettingsError, read_cell
from common.reproduce.layout import CELL_FILE, cell_dir
from common.training.data import load_split_data
from face_search.errors import GalleryInputError
from face_search.index import manifest
from face_search.inputs import label_names

DAMAGES = {
    "nested_too_deep": b"[" * 200_000,
    "not_utf8": b'{"format": "\xff\xfe"}',
    "truncated": b'{"format": ',
    "not_an_object": b"[1, 2, 3]",
}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    load_split_data("synthetic", str(root), synthetic_kwargs=dict(
        num_identities=3, train_per_identity=2, test_per_identity=1))
    return root


def test_the_shared_reader_turns_deep_nesting_into_a_value_error():
    with pytest.raises(ValueError, match="nested too deeply"):
        json_files.loads(DAMAGES["nested_too_deep"])


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_synthetic_meta_json(damage, synthetic_dir):
    path = synthetic_dir / "meta.json"
    kept = path.read_bytes()
    path.write_bytes(DAMAGES[damage])
    try:
        with pytest.raises(DataFormatError, match="damaged") as excinfo:
            load_split_data("synthetic", str(synthetic_dir), synthetic_kwargs=dict(
                num_identities=3, train_per_identity=2, test_per_identity=1))
        assert str(path) in str(excinfo.value)
    finally:
        path.write_bytes(kept)


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_reproduction_cell(damage, tmp_path):
    folder = cell_dir(str(tmp_path), "itq", 8)
    os.makedirs(folder)
    path = os.path.join(folder, CELL_FILE)
    with open(path, "wb") as f:
        f.write(DAMAGES[damage])
    with pytest.raises(CellSettingsError, match="damaged") as excinfo:
        read_cell(str(tmp_path), "itq", 8)
    assert path in str(excinfo.value) and len(str(excinfo.value)) < 300


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_gallerys_label_names(damage, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "meta.json").write_bytes(DAMAGES[damage])
    if damage == "not_an_object":  # a meta.json without names: no names, as documented
        assert label_names(str(tmp_path / "train")) is None
        return
    with pytest.raises(GalleryInputError, match="damaged") as excinfo:
        label_names(str(tmp_path / "train"))
    assert str(tmp_path / "meta.json") in str(excinfo.value)


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_converted_data_sets_marker_is_simply_not_ours(damage, tmp_path):
    """A converter output's meta.json decides whether --overwrite may replace the folder:
    damaged, the folder is not known to be ours, so it is not replaced (no crash)."""
    (tmp_path / META_FILE).write_bytes(DAMAGES[damage])
    assert is_previous_output(str(tmp_path)) is False


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_gallery_index_manifest(damage):
    """Without the format's marker the bytes are no manifest (the index loader then says
    the folder is not an index: tests/face_search/index/test_consistency.py)."""
    assert manifest.marked(DAMAGES[damage]) is None
    assert manifest.checked(DAMAGES[damage], "index.json") is None
