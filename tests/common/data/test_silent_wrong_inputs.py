"""Inputs that used to load and give a wrong result without an error are refused or flagged.

Labels: a float 1e300 trained with only a cast warning, a uint64 near 2**64 ended in
TensorFlow's "Graph execution error" (it became a negative int64). Labels must now be
exact integers 0..MAX_LABEL, in whatever dtype they come.

Pixels: a split scaled to 0..1 passed the -1..256 range check, trained, and its export
(which serves raw 0..255 images with the train split's constants) mapped every real face
to one code. Pixels all within -1..1 are now refused, naming the file or folder; a
narrow pixel span (under 32 levels) loads with a ``DataFormatWarning``.
"""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest

from common.data import (ROW_WIDTH, DataFormatError, DataFormatWarning, Normalization,
                         load_pickle_file, load_pickle_folder, preprocess_split,
                         write_pickle_folder)
from common.data.pickle_folder import MAX_LABEL
from common.training.data import MAX_CLASSES, load_split_data


def _pixels(n: int, seed: int = 0, low: float = 0.0, high: float = 255.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, (n, ROW_WIDTH)).astype(np.float32)


def _dump(path, x, y) -> str:
    with open(path, "wb") as f:
        pickle.dump((x, y), f, protocol=4)
    return os.fspath(path)


def _refused(call, path, *fragments: str) -> str:
    with pytest.raises(DataFormatError) as excinfo:
        call(path)
    message = str(excinfo.value)
    assert message.startswith(os.fspath(path) + ": "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ----------------------------------------------------------------------------- labels


def test_the_reader_bound_is_the_class_limit():
    assert MAX_CLASSES == MAX_LABEL + 1 == 1_000_000


@pytest.mark.parametrize("labels, fragments", [
    (np.array([0.0, 1e300]), ("label 1e+300 is above 999999",)),
    (np.array([0.0, 1e6], np.float32), ("label 1e+06 is above 999999",)),
    (np.array([0, 2 ** 64 - 1], np.uint64), ("label 18446744073709551615 is above",)),
    (np.array([0, 2 ** 63], np.uint64), ("label 9223372036854775808 is above",)),
    (np.array([0, MAX_LABEL + 1]), ("label 1000000 is above",)),
    (np.array([0, np.iinfo(np.int64).max]), ("label 9223372036854775807 is above",)),
    ([0, 2 ** 64 - 1], ("label 1.84467e+19 is above",)),   # a list: numpy makes it float64
    (np.array([0.0, np.nan]), ("labels must be integers", "nan")),
    (np.array([0.0, np.inf]), ("labels must be integers", "inf")),
    (np.array([0.0, -np.inf]), ("labels must be integers", "inf")),
    (np.array([0.0, 2.5]), ("labels must be integers", "2.5")),
    (np.array([0.0, -0.5]), ("labels must be integers", "-0.5")),
    (np.array([0.0, -1.0]), ("labels must be non-negative, found -1",)),
    (np.array([0.0, -1e300]), ("labels must be non-negative, found -1e+300",)),
    (np.array([0, -3], np.int8), ("labels must be non-negative, found -3",)),
    (np.array([True, False]), ("labels must be integers, got dtype bool",)),
])
def test_labels_must_be_exact_integers_in_range(tmp_path, labels, fragments):
    path = _dump(tmp_path / "f.pkl", _pixels(2), labels)
    _refused(load_pickle_file, path, *fragments)


@pytest.mark.parametrize("labels", [np.array([0.0, 999999.0]), np.array([0, 999999], np.uint64),
                                    np.array([0, 999999], np.uint32), [0, 999999],
                                    np.array([0.0, 7.0], np.float16)])
def test_labels_up_to_the_limit_load_exactly_as_int64(tmp_path, labels):
    path = _dump(tmp_path / "f.pkl", _pixels(2), labels)
    _, y = load_pickle_file(path)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, np.asarray(labels).astype(np.int64))


@pytest.mark.parametrize("bad", [np.array([0, 1, 2 ** 64 - 1], np.uint64),
                                 np.array([0.0, 1.0, 1e300])])
def test_training_data_with_such_labels_is_refused_before_tensorflow(tmp_path, bad):
    """The reported failures: each is a DataFormatError naming the file, not a cast
    warning or a TensorFlow error."""
    train, test = tmp_path / "train", tmp_path / "test"
    write_pickle_folder(train, _pixels(3), np.arange(3))
    write_pickle_folder(test, _pixels(3, seed=1), np.arange(3))
    _dump(train / "part_000.pkl", _pixels(3), bad)
    with pytest.raises(DataFormatError) as excinfo:
        load_split_data("folder", train_dir=str(train), test_dir=str(test))
    assert str(excinfo.value).startswith(os.path.join(train, "part_000.pkl") + ": label ")


# ----------------------------------------------------------------------------- pixels


def test_why_a_split_in_another_scale_is_refused():
    """A 0..1 split's constants map real 0..255 images to the clip value: one input."""
    norm = Normalization.fit(_pixels(50) / 255.0)
    served = norm.apply(_pixels(20, seed=3))     # what an export does to raw 0..255 faces
    assert np.mean(served == 1.0) > 0.98         # every pixel above 3.4 of 255 clips to 1


@pytest.mark.parametrize("name, x", [
    ("0..1", _pixels(6) / 255.0),
    ("0..1 float64", (_pixels(6) / 255.0).astype(np.float64)),
    ("-1..1", _pixels(6) / 127.5 - 1.0),
    ("the original preprocessing's output", preprocess_split(_pixels(6))[0]),
    ("0..1 with black frames", np.concatenate([np.zeros((3, ROW_WIDTH), np.float32),
                                               _pixels(3) / 255.0])),
    ("binary 0/1", (_pixels(6) > 128).astype(np.uint8)),
])
def test_a_split_scaled_to_0_1_is_refused_naming_the_folder(tmp_path, name, x):
    folder = tmp_path / "split"
    write_pickle_folder(folder, x, np.arange(len(x)) % 3, rows_per_file=2)
    low, high = float(np.min(x)), float(np.max(x))
    _refused(load_pickle_folder, os.fspath(folder), f"every pixel lies in {low:g}..{high:g}",
             "look scaled to 0..1", "pixels must be 0..255", "multiply by 255")
    # each file on its own too (as the search reads query and gallery files)
    _refused(load_pickle_file, os.path.join(folder, "part_002.pkl"), "look scaled to 0..1")


def test_training_refuses_a_scaled_train_split(tmp_path):
    train, test = tmp_path / "train", tmp_path / "test"
    write_pickle_folder(train, _pixels(6) / 255.0, np.arange(6) % 3)
    write_pickle_folder(test, _pixels(3, seed=1), np.arange(3))
    with pytest.raises(DataFormatError) as excinfo:
        load_split_data("folder", train_dir=str(train), test_dir=str(test))
    assert str(excinfo.value).startswith(f"{train}: every pixel lies in ")


@pytest.mark.parametrize("low, high", [(100.0, 110.0), (0.0, 10.0), (0.0, 31.0), (-1.0, 2.0)])
def test_a_narrow_pixel_span_loads_with_a_warning_naming_the_folder(tmp_path, low, high):
    folder = tmp_path / "split"
    x = _pixels(4, low=low, high=high)
    x[0, 0], x[0, 1] = low, high
    write_pickle_folder(folder, x, np.arange(4))
    with pytest.warns(DataFormatWarning) as record:
        got, _ = load_pickle_folder(folder)
    np.testing.assert_array_equal(got, x)
    messages = [str(w.message) for w in record if issubclass(w.category, DataFormatWarning)]
    assert len(messages) == 1 and messages[0].startswith(f"{folder}: pixels span only "), messages
    assert "rescale them to 0..255" in messages[0]


@pytest.mark.parametrize("x", [
    _pixels(4),                                                         # 0..255
    np.random.default_rng(1).integers(0, 256, (4, ROW_WIDTH)).astype(np.uint8),
    _pixels(4, high=40.0),                                              # dark, 40 levels
    np.zeros((4, ROW_WIDTH), np.float32),                               # black frames
    np.full((4, ROW_WIDTH), 1.0, np.float32),                           # constant 1
])
def test_real_and_constant_images_load_silently(tmp_path, x):
    """Constant data is not this module's concern: images are legal, a constant split is
    refused by the normalisation (tests/common/data/test_input_safety.py)."""
    folder = tmp_path / "split"
    write_pickle_folder(folder, x, np.arange(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataFormatWarning)
        got, _ = load_pickle_folder(folder)
    np.testing.assert_array_equal(got, x.astype(np.float32))
