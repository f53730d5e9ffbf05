"""Load a data set's two splits, preprocessed as the original did, for training.

Why a separate module: the training loop and the command line only need "arrays in,
class count out"; where the folders live, how the synthetic set is generated on first
use and which label checks apply are decided here, without importing TensorFlow (so
the command line can reject bad data in a fraction of a second).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from absl import logging

from common.io import json_files
from common.io.atomic import make_temp_dir
from common.data.validation_split import DEFAULT_SEED as DEFAULT_VALIDATION_SEED
from common.data.extra_rows import check_extra_rows, check_train_folder, read_record, rows_digest
from common.data.validation_split import checked_validation_indices

from common.data import (
    DataFormatError,
    Normalization,
    check_test_labels,
    list_data_files,
    load_pickle_folder,
    preprocess_split,
    to_nhwc,
)
from common.data.pickle_folder import MAX_LABEL

# name -> (train folder, test folder, number of classes) for the original data sets.
KNOWN_DATASETS: dict[str, tuple[str, str, int]] = {
    "youtube_faces": ("train_vec_folder_32_32", "test_vec_folder_32_32", 1595),
    "facescrub": ("train_folder_facescrub", "test_folder_facescrub", 530),
}
DATASETS = ("youtube_faces", "facescrub", "folder", "synthetic")
DEFAULT_SYNTHETIC_DIR = os.path.join("data", "synthetic")
# A split's class count is its largest label + 1 (for "folder" and "synthetic"). Sparse
# labels would silently build a classifier over mostly empty classes, so a label set is
# refused when that count exceeds twice the distinct labels plus 100 (gaps up to half
# the range, or any gaps in small sets, are fine: a train split that omits some
# identities) and always beyond MAX_CLASSES (the classifier alone would need gigabytes;
# the reader refuses any label above MAX_LABEL already).
MAX_CLASSES = MAX_LABEL + 1
SPARSE_FACTOR = 2
SPARSE_SLACK = 100
SYNTHETIC_KEYS = ("num_identities", "train_per_identity", "test_per_identity", "seed")


@dataclass
class SplitData:
    """The splits, preprocessed, plus what export and resume need to know about them.

    Attributes:
        train_images: (n, 32, 32, 3) float32, normalised with the train split's statistics.
            With a validation split, the train folder's rows without the held-out ones:
            what training sees and the retrieval database.
        train_labels: (n,) int64.
        test_images: (m, 32, 32, 3) float32, normalised with the TEST split's own
            statistics (as the original did).
        test_labels: (m,) int64.
        num_classes: classifier width.
        normalization: the TRAIN folder's constants (all its rows, held-out ones
            included; baked into exported models).
        description: JSON-able facts about the data (name, folders, sizes, classes,
            the validation split's fraction and seed).
        validation_images: (v, 32, 32, 3) float32 rows held out of the train folder
            (common.data.validation_split), normalised as the train split; empty when
            there is no validation split.
        validation_labels: (v,) int64.
        extra_train_images: (e, 32, 32, 3) float32 rows that training sees beside the train
            split but that are neither the retrieval database nor drawn into the validation
            split (generated variants: ``--extra_train_dir``), normalised as the train
            split; empty without them.
        extra_train_labels: (e,) int64.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    normalization: Normalization
    description: dict[str, Any] = field(default_factory=dict)
    # None when built: no validation split (empty arrays from __post_init__ on).
    validation_images: np.ndarray = None  # type: ignore[assignment]
    validation_labels: np.ndarray = None  # type: ignore[assignment]
    extra_train_images: np.ndarray = None  # type: ignore[assignment]
    extra_train_labels: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.validation_images is None:
            self.validation_images = self.train_images[:0]
        if self.validation_labels is None:
            self.validation_labels = self.train_labels[:0]
        if self.extra_train_images is None:
            self.extra_train_images = self.train_images[:0]
        if self.extra_train_labels is None:
            self.extra_train_labels = self.train_labels[:0]

    @property
    def has_validation(self) -> bool:
        """Whether states are selected on a validation split (else on the test split)."""
        return len(self.validation_labels) > 0

    def training_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) training steps through: the train split, then the extra rows.

        Without extra rows these are the train split's own arrays (no copy), so a run
        without them sees exactly what it saw before they existed.
        """
        if not len(self.extra_train_labels):
            return self.train_images, self.train_labels
        return (np.concatenate([self.train_images, self.extra_train_images]),
                np.concatenate([self.train_labels, self.extra_train_labels]))

    def queries(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of the query split "validation" or "test"."""
        if split == "validation":
            return self.validation_images, self.validation_labels
        if split == "test":
            return self.test_images, self.test_labels
        raise ValueError(f"query split must be 'validation' or 'test', got {split!r}")


def _load_split(folder: str, name: str, digest: bool = False
                ) -> tuple[np.ndarray, np.ndarray, Normalization, str | None]:
    """Load one folder, normalise it with its own statistics, return NHWC images (and,
    if ``digest``, :func:`common.data.extra_rows.rows_digest` of the rows as read).

    A constant split (all pixels equal) is refused by ``preprocess_split``, naming the folder.
    """
    rows, labels = load_pickle_folder(folder)
    if len(labels) == 0:
        raise DataFormatError(folder, f"the {name} split holds no images")
    sha256 = rows_digest(rows, labels) if digest else None
    # same scalars per pixel: order-free
    rows, norm = preprocess_split(rows, in_place=True, source=folder)
    return to_nhwc(rows), labels, norm, sha256


def class_count_from_labels(labels: np.ndarray, folder: str) -> int:
    """The class count of a split whose labels define it: largest label + 1.

    Raises:
        DataFormatError: fewer than two classes, or labels so sparse that the count
            would be absurd (see ``MAX_CLASSES`` / ``SPARSE_FACTOR``); names ``folder``.
    """
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise DataFormatError(folder, "the train split must hold at least two classes")
    distinct = int(np.unique(labels).size)
    limit = min(SPARSE_FACTOR * distinct + SPARSE_SLACK, MAX_CLASSES)
    if num_classes > limit:
        raise DataFormatError(
            folder, f"labels are too sparse: {distinct} distinct labels, but the largest is "
                    f"{num_classes - 1}, which would make {num_classes} classes (class count = "
                    f"largest train label + 1; at most {limit} allowed for {distinct} labels); "
                    f"relabel the identities to 0..{distinct - 1}")
    return num_classes


def _check_label_range(labels: np.ndarray, num_classes: int, folder: str, why: str) -> None:
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(labels.max())
        raise DataFormatError(
            folder, f"label {bad} is out of range: {why} has {num_classes} classes "
                    f"(labels 0..{num_classes - 1})")


def _has_data(folder: str) -> bool:
    try:
        list_data_files(folder)
    except DataFormatError:
        return False
    return True


def ensure_synthetic(data_dir: str, synthetic_kwargs: dict[str, Any] | None = None) -> dict:
    """Return the synthetic set's metadata, generating it into ``data_dir`` if absent.

    Generation goes to a temporary sibling folder renamed into place, so an interrupted
    run never leaves a half-written set behind. ``synthetic_kwargs`` (num_identities,
    train_per_identity, test_per_identity, seed; None or missing keys = the generator's
    defaults) must agree with an existing set's ``meta.json``.
    """
    from common.synthetic import write_synthetic_dataset  # deferred: only this dataset needs it

    kwargs = {k: v for k, v in (synthetic_kwargs or {}).items() if v is not None}
    unknown = set(kwargs) - set(SYNTHETIC_KEYS)
    if unknown:
        raise ValueError(f"unknown synthetic settings: {sorted(unknown)}")
    data_dir = os.path.abspath(data_dir)
    meta_path = os.path.join(data_dir, "meta.json")
    splits_present = [_has_data(os.path.join(data_dir, s)) for s in ("train", "test")]
    if all(splits_present):
        meta: dict[str, Any] = {}
        if os.path.exists(meta_path):
            try:
                meta = json_files.load(meta_path)
            except (OSError, ValueError) as exc:
                raise DataFormatError(meta_path, f"damaged ({exc}); delete the folder to "
                                      "generate the data set again") from None
            if not isinstance(meta, dict):
                raise DataFormatError(meta_path, "damaged (not a JSON object); delete the "
                                      "folder to generate the data set again")
        differ = {k: (meta.get(k), v) for k, v in kwargs.items() if k in meta and meta[k] != v}
        if differ:
            shown = ", ".join(f"{k}={old} (requested {new})" for k, (old, new) in differ.items())
            raise DataFormatError(
                data_dir, f"holds a different synthetic data set: {shown}; choose another "
                          "--data_dir or delete this one to regenerate it")
        return meta
    if os.path.exists(data_dir) and (any(splits_present) or os.listdir(data_dir)):
        raise DataFormatError(
            data_dir, "is not empty but holds no complete synthetic data set (train/ and test/); "
                      "delete it or choose another --data_dir")
    parent = os.path.dirname(data_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = make_temp_dir(f".{os.path.basename(data_dir)}.tmp-", parent)
    try:
        logging.info("generating the synthetic data set into %s", data_dir)
        meta = write_synthetic_dataset(tmp, **kwargs)
        os.replace(tmp, data_dir)  # an empty data_dir is replaced atomically too
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and all(
                _has_data(os.path.join(data_dir, s)) for s in ("train", "test")):
            # another process generated it meanwhile (one per worker, say; the replace is
            # atomic, so it is complete): use it, as a later call would
            return ensure_synthetic(data_dir, kwargs)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def load_split_data(dataset: str, data_dir: str | None = None, train_dir: str | None = None,
                    test_dir: str | None = None,
                    synthetic_kwargs: dict[str, Any] | None = None,
                    validation_fraction: float = 0.0,
                    validation_seed: int = DEFAULT_VALIDATION_SEED,
                    extra_train_dir: str | None = None) -> SplitData:
    """Load and preprocess the train and test splits of ``dataset``.

    Args:
        dataset: "youtube_faces" or "facescrub" (the original folders under
            ``data_dir``, 1595 / 530 classes), "folder" (``train_dir`` and
            ``test_dir``; classes = largest train label + 1, refused when the labels
            are too sparse: see :func:`class_count_from_labels`) or "synthetic"
            (``data_dir``, default ``data/synthetic``, generated on first use).
        data_dir: parent folder of the original split folders / the synthetic set.
        train_dir, test_dir: explicit split folders (override the defaults).
        synthetic_kwargs: generator settings for "synthetic" (see :func:`ensure_synthetic`).
        validation_fraction: share of each identity's train images held out as the
            validation split (common.data.validation_split; 0: none, states are then
            selected on the test split as the original did).
        validation_seed: seed of that draw.
        extra_train_dir: a folder of further training rows (see :func:`add_extra_train_rows`):
            trained on, never the database, never held out for validation.

    Raises:
        DataFormatError: a folder is missing or malformed, a split is empty or
            constant (all pixels equal), the train labels are too sparse, a label does
            not fit the class count (the message names the folder), a
            ``validation_fraction`` > 0 holds out no image, or is asked of a train folder
            that augment wrote with its originals (variants of the validation faces would
            be trained on: :func:`common.data.extra_rows.check_train_folder`).
        ValueError: unknown dataset, "folder" without both folders, or "synthetic" with
            other folders than its own.

    Test labels that never occur in the train split only warn (``DataFormatWarning``).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    num_classes: int | None = None
    extra: dict[str, Any] = {}
    if dataset in KNOWN_DATASETS:
        train_name, test_name, num_classes = KNOWN_DATASETS[dataset]
        base = data_dir if data_dir is not None else "data"
        train_dir = train_dir or os.path.join(base, train_name)
        test_dir = test_dir or os.path.join(base, test_name)
    elif dataset == "folder":
        if not train_dir or not test_dir:
            raise ValueError("dataset 'folder' needs both --train_dir and --test_dir")
    else:  # synthetic
        base = data_dir if data_dir is not None else DEFAULT_SYNTHETIC_DIR
        for given, own in ((train_dir, "train"), (test_dir, "test")):
            # another folder would have the synthetic set written, then trained on the folder
            if given and os.path.realpath(given) != os.path.realpath(os.path.join(base, own)):
                raise ValueError(f"{given}: train and test folders are read with dataset "
                                 "'folder' (or a named data set); the synthetic set is its "
                                 f"own ({os.path.join(base, own)}): pass --dataset folder")
        meta = ensure_synthetic(base, synthetic_kwargs)
        extra["synthetic"] = {k: meta[k] for k in ("generator_version", *SYNTHETIC_KEYS)
                              if k in meta}
        train_dir = train_dir or os.path.join(base, "train")
        test_dir = test_dir or os.path.join(base, "test")
    train_dir, test_dir = os.path.abspath(train_dir), os.path.abspath(test_dir)
    list_data_files(train_dir)  # fail on a missing test folder before loading the big train split
    list_data_files(test_dir)
    if extra_train_dir:
        list_data_files(extra_train_dir)
    check_train_folder(train_dir, validation_fraction)

    # the digest of the train rows as read, where the extra rows' record names the rows
    # they were made from (compared in add_extra_train_rows)
    source_named = bool(extra_train_dir and
                        (read_record(extra_train_dir) or {}).get("source_sha256"))
    train_images, train_labels, train_norm, train_sha256 = _load_split(
        train_dir, "train", digest=source_named)
    if num_classes is None:
        num_classes = class_count_from_labels(train_labels, train_dir)
        why = "the train split"
    else:
        why = f"data set {dataset!r}"
        _check_label_range(train_labels, num_classes, train_dir, why)
    test_images, test_labels, test_norm, _ = _load_split(test_dir, "test")
    _check_label_range(test_labels, num_classes, test_dir, why)
    check_test_labels(train_labels, test_labels, test_dir)
    description = {
        "dataset": dataset, "train_dir": train_dir, "test_dir": test_dir,
        "train_images": int(len(train_labels)), "test_images": int(len(test_labels)),
        "num_classes": int(num_classes),
        "test_normalization": {"mean": test_norm.mean, "std": test_norm.std},
        **extra,
    }
    data = SplitData(train_images, train_labels, test_images, test_labels, int(num_classes),
                     train_norm, description)
    data = hold_out_validation(data, validation_fraction, validation_seed)
    if not extra_train_dir:
        return data
    return add_extra_train_rows(data, extra_train_dir, train_sha256=train_sha256)


def add_extra_train_rows(data: SplitData, folder: str,
                         train_sha256: str | None = None) -> SplitData:
    """``data`` with the rows of ``folder`` as extra training rows.

    Why: an augmented split (``python -m dfh_tf.gan.augment --variants_only``) adds
    generated variants to what a method trains on; put into the train folder they would
    become retrieval database items (a query would then find variants of its own
    identity twice as often) and could be drawn into the validation split. Kept apart,
    the database and the validation split stay the train folder's, and only training
    sees the variants. They are normalised with the train folder's constants (a
    variant is an image of the same kind), and must fit its class count. Rows that
    would carry a held-out or test face into training are refused
    (:func:`common.data.extra_rows.check_extra_rows`; checked again when a validation
    split is drawn later, :func:`hold_out_validation`), and so are rows that differ from
    what their record describes, or that were made from the train folder's rows of before.
    The description records their folder, count and digest (a resume, or a table cell's
    reuse, needs the same rows).

    ``train_sha256``: :func:`common.data.extra_rows.rows_digest` of the train folder's rows
    as read (all of them, held-out ones included), as :func:`load_split_data` computes it;
    None: read again here when the rows' record names the digest of their source.

    Raises:
        DataFormatError: ``folder`` is missing, malformed or empty, a label is out of the
            train split's class range, or the rows could carry a held-out face (the
            message names the folder).
        ValueError: ``data`` already holds extra rows.
    """
    if len(data.extra_train_labels):
        raise ValueError("the data already holds extra training rows")
    folder = os.path.abspath(folder)
    rows, labels = load_pickle_folder(folder)
    digest = rows_digest(rows, labels)
    train_dir = data.description.get("train_dir")
    if train_sha256 is None and train_dir and (read_record(folder) or {}).get("source_sha256"):
        train_sha256 = rows_digest(*load_pickle_folder(train_dir))
    check_extra_rows(folder, data.description, rows_sha256=digest, train_sha256=train_sha256)
    if len(labels) == 0:
        raise DataFormatError(folder, "the extra train split holds no images")
    _check_label_range(labels, data.num_classes, folder, "the train split")
    images = to_nhwc(data.normalization.apply(rows, out=rows))
    description = dict(data.description, extra_train_dir=folder,
                       extra_train_images=int(len(labels)), extra_train_sha256=digest)
    return dataclasses.replace(data, description=description, extra_train_images=images,
                               extra_train_labels=labels)


def _identities_without_validation(labels: np.ndarray, held: np.ndarray) -> int:
    """How many identities of ``labels`` have no row among ``held``."""
    return int(len(np.unique(labels)) - len(np.unique(labels[held])))


def hold_out_validation(data: SplitData, fraction: float,
                        seed: int = DEFAULT_VALIDATION_SEED) -> SplitData:
    """``data`` with ``fraction`` of each identity's train images held out as its validation
    split (common.data.validation_split); ``data`` itself if ``fraction`` is 0.

    The normalisation stays the train folder's (all rows); ``description`` records the
    split (``"validation"``: fraction, seed, images) and the remaining train count.

    Raises:
        ValueError: ``data`` already has a validation split, or a bad fraction.
        DataFormatError: ``fraction`` > 0 holds out no image (too few per identity): the
            state would be chosen on the test split, the opposite of what was asked.
    """
    if data.has_validation:
        raise ValueError("the data already holds a validation split")
    if data.description.get("train_dir"):  # data loaded without a split, held out now
        check_train_folder(data.description["train_dir"], fraction)
    kept, held = checked_validation_indices(
        data.train_labels, fraction, seed, data.description.get("train_dir") or "the train split",
        without="chosen on the test split")
    if not len(held):
        return data
    none_held = _identities_without_validation(data.train_labels, held)
    if none_held:
        logging.info("validation split: %d of %d identities have too few train images to "
                     "give one at fraction %g", none_held,
                     len(np.unique(data.train_labels)), fraction)
    description = dict(data.description, train_images=int(len(kept)),
                       validation={"fraction": float(fraction), "seed": int(seed),
                                   "images": int(len(held))})
    if len(data.extra_train_labels):  # rows added before the split: now it is known
        check_extra_rows(description["extra_train_dir"], description)
    return SplitData(data.train_images[kept], data.train_labels[kept], data.test_images,
                     data.test_labels, data.num_classes, data.normalization, description,
                     data.train_images[held], data.train_labels[held],
                     data.extra_train_images, data.extra_train_labels)
