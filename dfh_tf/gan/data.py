"""The GAN's view of a data set: the project's pickle folders, pixels in [-1, 1].

Why not ``common.training.data.load_split_data``: that applies the hashing methods'
preprocessing (per-split mean/std x 0.1), while a GAN needs a fixed, invertible pixel
scale (x / 127.5 - 1, tanh's range) so that generated images can be written back as
0..255 pixels. Folders, the synthetic set and the label checks are the project's
(``common.training.data``, ``common.data``). No TensorFlow here: the command lines check
their data before TensorFlow loads.

Validation split: with ``validation_fraction`` > 0 the GAN's train split is the train
folder without the rows ``common.data.validation_split.validation_indices`` holds out,
the same rows a hashing method run with the same fraction and seed holds out, so no
face of that validation split is seen by the GAN (or, through ``augment``, by the
variants a method trains on). The test split is left whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from absl import logging

from common.data import DataFormatError, list_data_files, load_pickle_folder, to_nhwc
from common.data.extra_rows import rows_digest
from common.data.validation_split import DEFAULT_SEED as DEFAULT_VALIDATION_SEED
from common.data.validation_split import checked_validation_indices
from common.training.data import (DEFAULT_SYNTHETIC_DIR, KNOWN_DATASETS, class_count_from_labels,
                                  ensure_synthetic)

DATASETS = ("synthetic", "folder", "youtube_faces", "facescrub")
NO_VALIDATION = "no validation split"  # what a fraction of 0 means here


@dataclass
class GanData:
    """Both splits as NHWC float32 images in [-1, 1] (the test split may be absent).

    Attributes:
        train_images: (n, 32, 32, 3) float32 in [-1, 1]. With a validation split, the
            train folder's rows without the held-out ones: all the GAN sees.
        train_labels: (n,) int64.
        test_images, test_labels: the same for the test split, or None without one.
        num_classes: identity count (the original sets' fixed count, else largest
            train label + 1).
        description: JSON-able facts (data set, folders, sizes, classes, ``train_sha256``:
            the train folder's rows as read, all of them, and with a validation split
            ``"validation": {"fraction", "seed", "images"}``).
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    num_classes: int
    description: dict[str, Any] = field(default_factory=dict)


def to_gan_pixels(images: np.ndarray) -> np.ndarray:
    """0..255 pixels (any shape) -> float32 in [-1, 1] (x / 127.5 - 1, clipped)."""
    out = np.asarray(images, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out)


def to_stored_pixels(images: np.ndarray) -> np.ndarray:
    """[-1, 1] images -> float32 0..255 integers (rounded, clipped), as the layout stores."""
    out = (np.asarray(images, dtype=np.float32) + np.float32(1.0)) * np.float32(127.5)
    return np.clip(np.round(out), 0.0, 255.0).astype(np.float32)


def resolve_folders(dataset: str, data_dir: str | None = None, train_dir: str | None = None,
                    test_dir: str | None = None) -> tuple[str, str | None]:
    """The train folder and the test folder (None when there is none) of ``dataset``.

    An explicit ``test_dir`` must exist; a data set's default test folder is used only
    when present (the GAN trains on the train split alone; the test split only feeds
    the identity check). "synthetic" is generated into ``data_dir`` on first use.

    Raises:
        ValueError: unknown data set, or "folder" without ``train_dir``.
        DataFormatError: a named folder is missing or holds no data files.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    default_test = None
    if dataset in KNOWN_DATASETS:
        train_name, test_name, _ = KNOWN_DATASETS[dataset]
        base = data_dir if data_dir is not None else "data"
        train_dir = train_dir or os.path.join(base, train_name)
        default_test = os.path.join(base, test_name)
    elif dataset == "folder":
        if not train_dir:
            raise ValueError("--dataset folder needs --train_dir (and --test_dir for the "
                             "identity check on test images)")
    else:
        base = data_dir if data_dir is not None else DEFAULT_SYNTHETIC_DIR
        ensure_synthetic(base)
        train_dir = train_dir or os.path.join(base, "train")
        default_test = os.path.join(base, "test")
    list_data_files(train_dir)
    if test_dir:
        list_data_files(test_dir)
    elif default_test and os.path.isdir(default_test):
        test_dir = default_test
    return os.path.abspath(train_dir), os.path.abspath(test_dir) if test_dir else None


def load_gan_data(dataset: str, data_dir: str | None = None, train_dir: str | None = None,
                  test_dir: str | None = None, validation_fraction: float = 0.0,
                  validation_seed: int = DEFAULT_VALIDATION_SEED) -> GanData:
    """Load a data set's splits for the GAN (see :func:`resolve_folders`).

    Args:
        dataset, data_dir, train_dir, test_dir: see :func:`resolve_folders`.
        validation_fraction: share of each identity's train images held out of the GAN's
            training (``common.data.validation_split``; 0: none). The class count stays
            the whole train folder's.
        validation_seed: seed of that draw (use the hashing run's ``--validation_seed``).

    Raises:
        DataFormatError: malformed folders, too sparse labels, labels beyond the fixed
            class count of an original data set, a ``validation_fraction`` > 0 that holds
            out no image.
        ValueError: see :func:`resolve_folders`; ``validation_fraction`` outside [0, 1).
    """
    train_dir, test_dir = resolve_folders(dataset, data_dir, train_dir, test_dir)
    rows, train_labels = load_pickle_folder(train_dir)
    if len(train_labels) == 0:
        raise DataFormatError(train_dir, "the train split holds no images")
    if dataset in KNOWN_DATASETS:
        num_classes = KNOWN_DATASETS[dataset][2]
        if int(train_labels.max()) >= num_classes:
            raise DataFormatError(train_dir, f"label {int(train_labels.max())} is out of range "
                                             f"for {dataset} ({num_classes} classes)")
    else:
        num_classes = class_count_from_labels(train_labels, train_dir)
    # which rows these are (a resume, and augment, need the very same ones), taken as a
    # hashing run's check of the variants takes its train folder's: all rows, as read
    train_sha256 = rows_digest(rows, train_labels)
    kept, held = checked_validation_indices(train_labels, validation_fraction, validation_seed,
                                            train_dir, without=NO_VALIDATION)
    if len(held):
        rows, train_labels = rows[kept], train_labels[kept]
    train_images = to_gan_pixels(to_nhwc(rows))
    del rows
    test_images = test_labels = None
    if test_dir:
        test_rows, test_labels = load_pickle_folder(test_dir)
        test_images = to_gan_pixels(to_nhwc(test_rows))
    description: dict[str, Any] = {
        "dataset": dataset, "train_dir": train_dir, "test_dir": test_dir,
        "train_images": int(len(train_labels)),
        "test_images": int(len(test_labels)) if test_labels is not None else 0,
        "num_classes": int(num_classes),
        "train_identities": int(np.unique(train_labels).size),
        "train_sha256": train_sha256,
    }
    if len(held):
        description["validation"] = {"fraction": float(validation_fraction),
                                     "seed": int(validation_seed), "images": int(len(held))}
    logging.info("GAN data: %s", description)
    return GanData(train_images, train_labels, test_images, test_labels, int(num_classes),
                   description)
