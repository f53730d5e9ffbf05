"""The validation split (common.data.validation_split) and how the loader applies it."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.validation_split import validation_indices
from common.training.data import load_split_data


def _labels():
    # identities with 1, 2, 10, 12 and 25 images, interleaved as files mix them
    counts = {0: 1, 1: 2, 2: 10, 3: 12, 4: 25}
    labels = np.concatenate([np.full(n, k) for k, n in counts.items()])
    return np.random.default_rng(7).permutation(labels), counts


def test_each_identity_gives_its_rounded_share_and_keeps_one_image():
    labels, counts = _labels()
    train, held = validation_indices(labels, 0.1)
    expected = {0: 0, 1: 0, 2: 1, 3: 1, 4: 3}  # round half up (2.5 -> 3), at most n - 1
    assert {k: int(np.sum(labels[held] == k)) for k in counts} == expected
    assert {k: int(np.sum(labels[train] == k)) for k in counts} == {
        k: counts[k] - expected[k] for k in counts}
    assert len(np.intersect1d(train, held)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)  # file order kept
    train, held = validation_indices(labels, 0.5)
    assert int(np.sum(labels[held] == 1)) == 1 and int(np.sum(labels[held] == 0)) == 0


def test_the_draw_depends_on_its_seed_only():
    labels, _ = _labels()
    first = validation_indices(labels, 0.2, seed=3)
    again = validation_indices(labels.copy(), 0.2, seed=3)
    other = validation_indices(labels, 0.2, seed=4)
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])
    assert len(first[1]) == len(other[1])


def test_no_fraction_holds_nothing_out_and_bad_fractions_are_refused():
    labels, _ = _labels()
    train, held = validation_indices(labels, 0.0)
    np.testing.assert_array_equal(train, np.arange(len(labels)))
    assert held.size == 0
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="validation_fraction"):
            validation_indices(labels, bad)


def test_the_loader_holds_rows_out_of_the_train_split_only(tmp_path):
    kwargs = dict(num_identities=5, train_per_identity=10, test_per_identity=2)
    whole = load_split_data("synthetic", str(tmp_path), synthetic_kwargs=kwargs)
    split = load_split_data("synthetic", str(tmp_path), synthetic_kwargs=kwargs,
                            validation_fraction=0.2, validation_seed=1)
    assert not whole.has_validation and split.has_validation
    assert len(split.validation_labels) == 10 and len(split.train_labels) == 40
    # the same normalisation (all of the train folder), the same test split
    assert split.normalization == whole.normalization
    np.testing.assert_array_equal(split.test_images, whole.test_images)
    train, held = validation_indices(whole.train_labels, 0.2, seed=1)
    np.testing.assert_array_equal(split.train_images, whole.train_images[train])
    np.testing.assert_array_equal(split.validation_images, whole.train_images[held])
    np.testing.assert_array_equal(split.validation_labels, whole.train_labels[held])
    assert split.description["validation"] == {"fraction": 0.2, "seed": 1, "images": 10}
    assert split.description["train_images"] == 40
    assert "validation" not in whole.description
    images, labels = split.queries("validation")
    assert images is split.validation_images and labels is split.validation_labels
    with pytest.raises(ValueError, match="query split"):
        split.queries("train")


@pytest.mark.parametrize("per_identity, fraction, advice", [
    (4, 0.1, r"the largest has 4; use at least 0\.125, or 0"),
    (7, 0.05, r"the largest has 7; use at least 0\.072, or 0"),
    (1, 0.5, r"no identity has two train images"),
])
def test_a_fraction_that_holds_out_nothing_is_refused(tmp_path, per_identity, fraction, advice):
    """Asked for a validation split and given none, training would choose its state on the
    test split, the opposite of what was asked: refused, naming the fraction that works."""
    from common.data import DataFormatError

    kwargs = dict(num_identities=3, train_per_identity=per_identity, test_per_identity=1)
    with pytest.raises(DataFormatError, match=rf"holds out no image: .*{advice}"):
        load_split_data("synthetic", str(tmp_path), synthetic_kwargs=kwargs,
                        validation_fraction=fraction)
    if per_identity > 1:  # the advised fraction does hold images out
        least = float(np.ceil(500 / per_identity) / 1000)
        split = load_split_data("synthetic", str(tmp_path), synthetic_kwargs=kwargs,
                                validation_fraction=least)
        assert len(split.validation_labels) == 3
