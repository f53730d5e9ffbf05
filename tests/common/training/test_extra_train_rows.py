"""Extra training rows (``--extra_train_dir``): trained on, never database, never validation.

Why they exist: GAN variants put into the train folder would become database items and
could be drawn into the validation split (common.training.data.add_extra_train_rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import pytest

from common.data import DataFormatError, load_pickle_folder, write_pickle_folder
from common.data.extra_rows import rows_digest
from common.reproduce.cells import CellSettingsError, finished_cell
from common.reproduce.harness import ReproduceConfig, cell_settings
from common.reproduce.layout import CELL_FILE, cell_dir
from common.runs.run_config import RunConfigMismatchError, check_resumable
from common.training.data import add_extra_train_rows, hold_out_validation, load_split_data

SYNTHETIC = dict(num_identities=5, train_per_identity=10, test_per_identity=2)


def _extra_folder(folder, labels, seed=0) -> np.ndarray:
    """Random 0..255 rows with ``labels`` written as a pickle folder; returns the rows."""
    x = np.random.default_rng(seed).integers(0, 256, (len(labels), 3072)).astype(np.float32)
    write_pickle_folder(folder, x, np.asarray(labels, np.int64), rows_per_file=4)
    return x


def _normalised_nhwc(rows: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The original preprocessing, written out in float64 (independent of Normalization)."""
    x = np.clip((rows.astype(np.float64) - mean) / (std + 1e-5) * 0.1, -1.0, 1.0)
    return x.reshape(len(rows), 3, 32, 32).transpose(0, 2, 3, 1)


@pytest.fixture
def folders(tmp_path):
    labels = np.array([0, 1, 2, 3, 4, 4, 3, 0, 1])
    rows = _extra_folder(tmp_path / "variants", labels)
    return tmp_path, rows, labels


def test_extra_rows_are_trained_on_but_are_neither_database_nor_validation(folders):
    root, rows, labels = folders
    plain = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=SYNTHETIC,
                            validation_fraction=0.2, validation_seed=1)
    data = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=SYNTHETIC,
                           validation_fraction=0.2, validation_seed=1,
                           extra_train_dir=str(root / "variants"))
    # the database, the validation split, the test split and the normalisation: unchanged
    for name in ("train_images", "train_labels", "validation_images", "validation_labels",
                 "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(data, name), getattr(plain, name))
    assert data.normalization == plain.normalization and data.num_classes == 5
    # the extra rows, normalised with the train folder's constants
    want = _normalised_nhwc(rows, data.normalization.mean, data.normalization.std)
    np.testing.assert_allclose(data.extra_train_images, want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(data.extra_train_labels, labels)
    assert data.description["extra_train_dir"] == str(root / "variants")
    assert data.description["extra_train_images"] == 9
    digest = hashlib.sha256(rows.astype("<f4").tobytes() + labels.astype("<i8").tobytes())
    assert data.description["extra_train_sha256"] == digest.hexdigest()
    assert data.description["train_images"] == 40  # the database's count
    assert "extra_train_dir" not in plain.description
    # training steps through the train split, then the extra rows
    images, seen = data.training_rows()
    np.testing.assert_array_equal(images[:40], data.train_images)
    np.testing.assert_array_equal(images[40:], data.extra_train_images)
    np.testing.assert_array_equal(seen, np.concatenate([data.train_labels, labels]))
    assert len(images) == 49
    # without extra rows, training sees the train split's own arrays (what it saw before)
    plain_images, plain_labels = plain.training_rows()
    assert plain_images is plain.train_images and plain_labels is plain.train_labels
    # and a harness cell's settings record them (a finished cell made without is not reused)
    config = ReproduceConfig(out=str(root / "table"), methods=["ddh"], bits=[12], seeds=[0])
    assert cell_settings(config, data)["extra_train_images"] == 9
    assert cell_settings(config, data)["extra_train_sha256"] == digest.hexdigest()
    assert cell_settings(config, plain)["extra_train_images"] == 0
    assert cell_settings(config, plain)["extra_train_sha256"] is None


def test_the_validation_split_drawn_later_keeps_the_extra_rows(folders):
    # the harness loads without a split and holds it out afterwards (harness.table_data)
    root, _, labels = folders
    first = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=SYNTHETIC,
                            extra_train_dir=str(root / "variants"))
    later = hold_out_validation(first, 0.2, 1)
    direct = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=SYNTHETIC,
                             validation_fraction=0.2, validation_seed=1,
                             extra_train_dir=str(root / "variants"))
    np.testing.assert_array_equal(later.extra_train_images, direct.extra_train_images)
    np.testing.assert_array_equal(later.extra_train_labels, labels)
    np.testing.assert_array_equal(later.validation_labels, direct.validation_labels)
    assert later.description == direct.description


def test_extra_rows_beyond_the_class_count_are_refused_naming_the_folder(tmp_path):
    data = load_split_data("synthetic", str(tmp_path / "data"), synthetic_kwargs=SYNTHETIC)
    _extra_folder(tmp_path / "other_identities", [0, 5, 1])
    with pytest.raises(DataFormatError, match=r"other_identities: label 5 is out of range: "
                                              r"the train split has 5 classes"):
        add_extra_train_rows(data, str(tmp_path / "other_identities"))
    with pytest.raises(DataFormatError, match="nowhere: folder does not exist"):
        load_split_data("synthetic", str(tmp_path / "data"), synthetic_kwargs=SYNTHETIC,
                        extra_train_dir=str(tmp_path / "nowhere"))
    _extra_folder(tmp_path / "fine", [0, 1])
    once = add_extra_train_rows(data, str(tmp_path / "fine"))
    with pytest.raises(ValueError, match="already holds extra training rows"):
        add_extra_train_rows(once, str(tmp_path / "fine"))


def _run_config(extra: int | None, digest: str = "a" * 64) -> dict:
    dataset: dict = {"dataset": "folder", "train_images": 40, "test_images": 10}
    if extra is not None:
        dataset.update(extra_train_images=extra, extra_train_sha256=digest)
    return {"method": "ddh", "num_classes": 5, "dataset": dataset,
            "normalization": {"mean": 100.0, "std": 50.0}}


def test_a_run_resumes_only_with_the_extra_rows_it_started_with(tmp_path):
    check_resumable(_run_config(None), _run_config(None), str(tmp_path))  # a run made before
    check_resumable(_run_config(9), _run_config(9), str(tmp_path))
    for old, new in ((None, 9), (9, None), (9, 18)):
        with pytest.raises(RunConfigMismatchError, match="cannot be resumed"):
            check_resumable(_run_config(old), _run_config(new), str(tmp_path))
    # as many rows, other rows (the control's copies instead of the variants)
    with pytest.raises(RunConfigMismatchError, match="extra_train_sha256"):
        check_resumable(_run_config(9), _run_config(9, "b" * 64), str(tmp_path))


def test_a_cell_finished_before_extra_rows_existed_is_reused_without_them(tmp_path):
    config = ReproduceConfig(out=str(tmp_path), methods=["ddh"], bits=[12])
    settings = {"epochs": 2, "seed": 0, "train_images": 40}  # what such a cell recorded
    folder = cell_dir(str(tmp_path), "ddh", 12, 0)
    os.makedirs(folder)
    with open(os.path.join(folder, CELL_FILE), "w") as f:
        json.dump({"settings": settings, "figures": {}}, f)
    assert finished_cell(config.out, "ddh", 12, {**settings, "extra_train_images": 0})
    with pytest.raises(CellSettingsError, match="extra_train_images"):
        finished_cell(config.out, "ddh", 12, {**settings, "extra_train_images": 9})


@pytest.mark.slow
def test_training_steps_through_the_extra_rows_and_scores_without_them(folders):
    from common.training.loop import TrainConfig, train
    from common.training.saved_run import evaluate_run
    from ddh_tf.method import DDH

    root, _, _ = folders
    data = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=SYNTHETIC,
                           validation_fraction=0.2, validation_seed=1,
                           extra_train_dir=str(root / "variants"))
    config = TrainConfig(epochs=1, model_dir=str(root / "run"), batch_size=16, eval_every=1,
                         log_every_steps=0)
    report = train(DDH(num_bits=12), data, config)
    assert report["train_images_total"] == 40 + 9  # one epoch: the train rows and the extra
    with open(root / "run" / "run_config.json") as f:
        assert json.load(f)["dataset"]["extra_train_images"] == 9
    scored = evaluate_run(DDH, str(root / "run"), "last")
    assert scored["database"] == 40 and scored["queries"] == 10


def _record(folder, **fields) -> None:
    """The making record augment wrote beside a rows folder before (OUT/augment.json)."""
    with open(os.path.join(os.path.dirname(folder), "augment.json"), "w") as f:
        json.dump(fields, f)


def test_extra_rows_that_could_carry_a_held_out_face_are_refused(tmp_path):
    kwargs = dict(synthetic_kwargs=SYNTHETIC, validation_fraction=0.2, validation_seed=1)
    data_dir = tmp_path / "data"
    load_split_data("synthetic", str(data_dir), synthetic_kwargs=SYNTHETIC)  # generate it
    train, test = str(data_dir / "train"), str(data_dir / "test")
    for folder, which in ((train, "train"), (test, "test")):
        with pytest.raises(DataFormatError, match=f"is the run's {which} folder"):
            load_split_data("synthetic", str(data_dir), extra_train_dir=folder, **kwargs)
    rows_dir = str(tmp_path / "aug" / "train")
    _extra_folder(rows_dir, [0, 1, 2])
    split = {"fraction": 0.2, "seed": 1}
    good = dict(variants_only=True, source_train_dir=train, validation=split,
                gan_validation=split)
    refusals = {
        "holds the original rows as well": dict(good, variants_only=False),
        "was made from .*other_train, not from this run's train folder":
            dict(good, source_train_dir=str(tmp_path / "other_train")),
        r"include this run's validation split \(fraction 0.2, seed 1\)":
            dict(good, validation=None),
        "include this run's validation split": dict(good, validation={"fraction": 0.2,
                                                                      "seed": 2}),
        "made by a GAN that trained on this run's validation split":
            dict(good, gan_validation=None),
    }
    for message, record in refusals.items():
        _record(rows_dir, **record)
        with pytest.raises(DataFormatError, match=message):
            load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **kwargs)
    _record(rows_dir, **good)
    data = load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **kwargs)
    assert len(data.extra_train_labels) == 3
    # the harness draws its split after adding the rows: checked then too
    first = load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir)
    assert len(hold_out_validation(first, 0.2, 1).extra_train_labels) == 3
    with pytest.raises(DataFormatError, match="include this run's validation split"):
        hold_out_validation(first, 0.2, 3)
    # a damaged record is named, not ignored
    with open(os.path.join(tmp_path / "aug", "augment.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(DataFormatError, match="augment.json: damaged"):
        load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **kwargs)


# --- the making record: inside the folder, with the rows' digests -----------------------
SPLIT = {"fraction": 0.2, "seed": 1}
WITH_SPLIT = dict(synthetic_kwargs=SYNTHETIC, validation_fraction=0.2, validation_seed=1)


def _inside(folder, **fields) -> str:
    """The record augment writes now: inside the rows' folder, swapped in with them."""
    path = os.path.join(str(folder), ".augment.json")
    with open(path, "w") as f:
        json.dump(fields, f)
    return path


def _digest(folder) -> str:
    """The digest of a folder's rows as a run reads them."""
    return rows_digest(*load_pickle_folder(str(folder)))


@pytest.fixture
def made(tmp_path):
    """(data_dir, train folder, rows folder, a good record of those rows)."""
    data_dir = tmp_path / "data"
    load_split_data("synthetic", str(data_dir), synthetic_kwargs=SYNTHETIC)  # generate it
    train = str(data_dir / "train")
    rows_dir = tmp_path / "aug" / "train"
    _extra_folder(rows_dir, [0, 1, 2, 3])
    good = dict(variants_only=True, source_train_dir=train, validation=SPLIT,
                gan_validation=SPLIT, gan_train_dir=train, rows_sha256=_digest(rows_dir),
                source_sha256=_digest(train))
    return data_dir, train, str(rows_dir), good


def test_the_record_inside_the_rows_folder_wins_over_an_older_one_beside(made):
    data_dir, _, rows_dir, good = made
    _record(rows_dir, **dict(good, variants_only=False))  # an older augment's, stale
    _inside(rows_dir, **good)
    data = load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **WITH_SPLIT)
    assert data.description["extra_train_sha256"] == good["rows_sha256"]
    path = _inside(rows_dir, **dict(good, variants_only=False))
    _record(rows_dir, **good)
    with pytest.raises(DataFormatError, match=f"holds the original rows .*its {path}"):
        load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **WITH_SPLIT)


def test_rows_that_changed_since_augment_wrote_them_are_refused(made):
    data_dir, _, rows_dir, good = made
    _inside(rows_dir, **good)
    assert len(load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir,
                               **WITH_SPLIT).extra_train_labels) == 4
    rows, labels = load_pickle_folder(rows_dir)
    rows[0, 0] = 255.0 - rows[0, 0]  # one pixel of one row, under the same record
    write_pickle_folder(rows_dir, rows, labels, overwrite=True)
    with pytest.raises(DataFormatError, match=f"{rows_dir}: its rows changed since augment "
                                              "wrote them"):
        load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **WITH_SPLIT)
    # a record of augment before the digest (no rows_sha256): taken as before
    _inside(rows_dir, **{k: v for k, v in good.items() if k != "rows_sha256"})
    load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **WITH_SPLIT)


def test_rows_made_from_the_train_folder_of_before_are_refused(made, tmp_path):
    data_dir, train, rows_dir, good = made
    rows, labels = load_pickle_folder(train)
    late = np.flatnonzero(labels == 0)[-2:]  # two photos of identity 0 arrive later
    early = np.setdiff1d(np.arange(len(labels)), late)
    folder = str(tmp_path / "T")
    write_pickle_folder(folder, rows[early], labels[early])
    test = str(data_dir / "test")
    _inside(rows_dir, **dict(good, source_train_dir=folder, gan_train_dir=folder,
                             source_sha256=_digest(folder)))

    def load(fraction=0.2, extra=rows_dir):
        return load_split_data("folder", train_dir=folder, test_dir=test,
                               validation_fraction=fraction, validation_seed=1,
                               extra_train_dir=extra)
    data, plain = load(), load(extra=None)
    for name in ("train_images", "train_labels", "validation_images", "validation_labels",
                 "test_images", "test_labels"):  # what the run trains and selects on: as ever
        np.testing.assert_array_equal(getattr(data, name), getattr(plain, name))
    assert data.normalization == plain.normalization
    os.replace(write_pickle_folder(str(tmp_path / "late"), rows[late], labels[late])[0],
               os.path.join(folder, "part_001.pkl"))  # they join T
    refused = f"{rows_dir}: was made from the rows {folder} held then, and they changed since"
    for fraction in (0.2, 0.0):  # the harness draws its split after loading: checked then
        with pytest.raises(DataFormatError, match=refused):
            load(fraction)
    with pytest.raises(DataFormatError, match=refused):  # the folder read again here
        add_extra_train_rows(load(extra=None), rows_dir)
    # a record of augment before the digest: taken as before
    _inside(rows_dir, **dict(good, source_train_dir=folder, gan_train_dir=folder,
                             source_sha256=None))
    assert len(load().extra_train_labels) == 4


def test_rows_made_by_a_gan_trained_on_another_folder_are_refused(made, tmp_path):
    data_dir, train, rows_dir, good = made
    other = str(tmp_path / "other_train")
    _inside(rows_dir, **dict(good, gan_train_dir=other))
    with pytest.raises(DataFormatError, match=f"{rows_dir}: was made by a GAN trained on "
                                              f"{other}, not on this run's train folder"):
        load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **WITH_SPLIT)
    os.symlink(train, other)  # the same folder under another name
    load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **WITH_SPLIT)
    _inside(rows_dir, **dict(good, gan_train_dir=None))  # augment before it recorded it
    load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **WITH_SPLIT)


@pytest.mark.parametrize("field, value, says", [
    ("validation", {"fraction": "abc", "seed": 1}, 'validation.fraction is "abc"'),
    ("validation", {"fraction": "0.2 ", "seed": 1}, 'validation.fraction is "0.2 "'),
    ("validation", {"fraction": 0.2, "seed": None}, "validation.seed is null"),
    ("validation", {"fraction": 0.2}, "validation.seed is missing"),
    ("gan_validation", {"fraction": 0.2, "seed": -1}, "gan_validation.seed is -1"),
    ("gan_validation", [0.2, 1], "gan_validation is [0.2, 1]"),
    ("rows_sha256", 7, "rows_sha256 is 7"),
])
def test_a_damaged_value_in_the_record_names_the_file_and_the_field(made, field, value, says):
    data_dir, _, rows_dir, good = made
    _record(rows_dir, **dict(good, **{field: value}))  # the older layout: checked alike
    path = os.path.join(os.path.dirname(rows_dir), "augment.json")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: damaged: {says}, not ")):
        load_split_data("synthetic", str(data_dir), extra_train_dir=rows_dir, **WITH_SPLIT)


@pytest.mark.parametrize("inside", [True, False], ids=["record_inside", "older_beside"])
def test_a_split_written_with_its_originals_holds_out_no_validation_split(tmp_path, inside):
    data_dir = tmp_path / "data"
    load_split_data("synthetic", str(data_dir), synthetic_kwargs=SYNTHETIC)
    rows, labels = load_pickle_folder(str(data_dir / "train"))
    full = str(tmp_path / "full" / "train")  # the originals and a copy of each (the control)
    write_pickle_folder(full, np.tile(rows, (2, 1)), np.tile(labels, 2))
    write = _inside if inside else _record
    write(full, control="copies_only", original_images=len(labels), copies_per_image=1)
    test = str(data_dir / "test")
    with pytest.raises(DataFormatError, match=f"{full}: holds original rows together with "
                                              "their variants or copies") as e:
        load_split_data("folder", train_dir=full, test_dir=test, validation_fraction=0.2)
    for fix in ("--variants_only", "--extra_train_dir", "--validation_fraction 0"):
        assert fix in str(e.value)
    # without a validation split (states chosen on the test split): as before
    unsplit = load_split_data("folder", train_dir=full, test_dir=test)
    assert len(unsplit.train_labels) == 100
    with pytest.raises(DataFormatError, match="holds original rows together"):
        hold_out_validation(unsplit, 0.2)  # drawn later (./run.sh reproduce's in-process rows)
    write(full, variants_only=True, source_images=len(labels))  # not the originals
    assert len(load_split_data("folder", train_dir=full, test_dir=test,
                               validation_fraction=0.2).validation_labels) == 20
