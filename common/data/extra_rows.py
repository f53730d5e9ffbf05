"""Where extra training rows came from, and whether they may join a run.

Why: extra rows (``--extra_train_dir``: GAN variants, or their control of copies) are made
from a train folder's faces. Made from faces a run holds out for validation, by a GAN that
saw them, or taken from its test folder, they would let training see the faces its state
is chosen on or scored on, and nothing in the figures would show it. A folder written by
``python -m dfh_tf.gan.augment`` carries a record of its making, checked here against the
run: ``SPLIT_RECORD`` inside the folder (``OUT/train/.augment.json``, written with the rows
in one swap, so the two never disagree), or, from augment before that, ``RECORD_FILE``
beside it (``OUT/augment.json``). A folder without one is accepted with a note, since the
library cannot know where its rows came from. TensorFlow-free.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from typing import Any

import numpy as np
from absl import logging

from common.data.errors import DataFormatError
from common.io import json_files

RECORD_FILE = "augment.json"  # beside the rows' folder: the older layout (OUT/augment.json)
SPLIT_RECORD = ".augment.json"  # inside it, swapped in with the rows (hidden: never read as data)
SHA_KEYS = ("rows_sha256", "source_sha256")
FOLDER_KEYS = ("source_train_dir", "gan_train_dir")


def rows_digest(rows: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the rows as read (pixels, float32) and their labels: which rows these are,
    so that a run resumes, and a table cell is reused, only with the very same rows."""
    # hashed from the arrays' buffers: no copy of a split of gigabytes
    digest = hashlib.sha256(np.ascontiguousarray(rows, dtype="<f4").data)
    digest.update(np.ascontiguousarray(labels, dtype="<i8").data)
    return digest.hexdigest()


def record_path(folder: str) -> str | None:
    """The making record of ``folder``: the one inside it, else the older one beside it
    (None where there is none)."""
    folder = os.path.abspath(folder)
    for path in (os.path.join(folder, SPLIT_RECORD),
                 os.path.join(os.path.dirname(folder), RECORD_FILE)):
        if os.path.exists(path):
            return path
    return None


_MISSING = object()


def _damaged(path: str, field: str, value: Any, want: str) -> DataFormatError:
    shown = "missing" if value is _MISSING else json.dumps(value)[:80]
    return DataFormatError(path, f"damaged: {field} is {shown}, not {want}; write the rows "
                                 "again with python -m dfh_tf.gan.augment")


def _load_record(folder: str) -> tuple[dict[str, Any], str] | None:
    path = record_path(folder)
    if path is None:
        return None
    try:
        record = json_files.load(path)
    except (OSError, ValueError) as exc:
        raise DataFormatError(path, f"damaged ({exc}); it says how the rows of {folder} were "
                                    "made") from None
    if not isinstance(record, dict):
        raise DataFormatError(path, "damaged (not a JSON object)")
    for key in (*SHA_KEYS, *FOLDER_KEYS):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise _damaged(path, key, record[key], "a string")
    return record, path


def read_record(folder: str) -> dict[str, Any] | None:
    """The making record of ``folder`` (see :func:`record_path`; None where there is none).

    Raises:
        DataFormatError: the record exists but is damaged (it names the file).
    """
    found = _load_record(folder)
    return found[0] if found else None


def _split(value: Any) -> tuple[float, int] | None:
    """(fraction, seed) of the run's own validation split, None for none."""
    if not isinstance(value, dict) or not value.get("fraction"):
        return None
    return float(value["fraction"]), int(value.get("seed", 0))


def _recorded_split(record: dict[str, Any], key: str, path: str) -> tuple[float, int] | None:
    """(fraction, seed) of a split the record names under ``key``, None for none.

    Raises:
        DataFormatError: the value is not such a split (names the file and the field).
    """
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _damaged(path, key, value, "an object {fraction, seed} or null")
    fraction, seed = value.get("fraction", _MISSING), value.get("seed", _MISSING)
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not (
            math.isfinite(fraction) and 0.0 <= float(fraction) < 1.0):
        raise _damaged(path, f"{key}.fraction", fraction, "a number in [0, 1)")
    if not fraction:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise _damaged(path, f"{key}.seed", seed, "an integer >= 0")
    return float(fraction), int(seed)


def _same_folder(a: str, b: str | None) -> bool:
    if not b:
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def check_train_folder(train_dir: str, validation_fraction: float) -> None:
    """Refuse drawing a validation split from a split augment wrote with its originals.

    Why: such a folder holds every kept face with its variants (or copies); a validation
    split drawn from it holds faces whose variants stay in training.

    Raises:
        DataFormatError: ``validation_fraction`` > 0 and the folder's making record says it
            holds the originals with generated rows or copies (names the folder and the fix).
    """
    if not validation_fraction:
        return
    found = _load_record(train_dir)
    if found is None or found[0].get("variants_only"):
        return
    raise DataFormatError(
        train_dir, f"holds original rows together with their variants or copies (its "
                   f"{found[1]}): a validation split drawn from it (--validation_fraction "
                   f"{validation_fraction:g}) would leave variants of its validation faces in "
                   "training. Give the original train folder as --train_dir and the rows of "
                   "augment --variants_only as --extra_train_dir, or pass --validation_fraction 0 "
                   "to choose states on the test split as the earlier measurements did")


def check_extra_rows(folder: str, description: dict[str, Any], rows_sha256: str | None = None,
                     train_sha256: str | None = None) -> None:
    """Refuse extra rows that would carry a held-out or test face into training.

    ``description``: the run's data (``SplitData.description``: train_dir, test_dir and its
    ``validation`` split, if any). Checked: the folder is neither the train nor the test
    folder; where it has a making record, it holds no originals (``--variants_only``), was
    made from this train folder, by a GAN trained on it, without the rows of this run's
    validation split, by a GAN that did not train on them. Where given, and recorded (augment
    records both since it records them), the digests are compared: ``rows_sha256`` of the
    folder's rows as read, ``train_sha256`` of the run's train folder as read (all rows).

    Raises:
        DataFormatError: one of those fails (the message names the folder and the fix).
    """
    for split in ("train", "test"):
        if _same_folder(folder, description.get(f"{split}_dir")):
            raise DataFormatError(folder, f"is the run's {split} folder; extra training rows "
                                          "are rows the splits do not hold (e.g. GAN variants)")
    found = _load_record(folder)
    if found is None:
        logging.info("extra training rows %s carry no record of how they were made (%s): "
                     "make sure none is a face of the validation or test split, or a "
                     "variant of one", folder, SPLIT_RECORD)
        return
    record, path = found
    where = f"(its {path})"
    if not record.get("variants_only"):
        raise DataFormatError(folder, f"holds the original rows as well as the new ones {where}: "
                                      "they would be trained on twice, held-out ones included; "
                                      "write it with augment --variants_only")
    train_dir = description.get("train_dir")
    for key, what in (("source_train_dir", "was made from {}, not from"),
                      ("gan_train_dir", "was made by a GAN trained on {}, not on")):
        recorded = record.get(key)
        if recorded and train_dir and not _same_folder(recorded, train_dir):
            raise DataFormatError(folder, f"{what.format(recorded)} this run's train folder "
                                          f"{train_dir} {where}")
    if rows_sha256 and record.get("rows_sha256") and record["rows_sha256"] != rows_sha256:
        raise DataFormatError(folder, f"its rows changed since augment wrote them {where}: "
                                      "they are not the rows it describes; write them again")
    if train_sha256 and record.get("source_sha256") and record["source_sha256"] != train_sha256:
        raise DataFormatError(
            folder, f"was made from the rows {train_dir} held then, and they changed since "
                    f"{where}: this run's validation split may hold faces the extra rows were "
                    "made from; write them again from the folder as it is now")
    validation = _recorded_split(record, "validation", path)
    gan_validation = _recorded_split(record, "gan_validation", path)
    held = _split(description.get("validation"))
    if held is None:
        return  # nothing held out: no face to keep away from training
    shown = f"fraction {held[0]:g}, seed {held[1]}"
    if validation != held:
        raise DataFormatError(
            folder, f"was made from rows that include this run's validation split ({shown}) "
                    f"{where}: variants of faces the state is chosen on would be trained on; "
                    "make it with the same --validation_fraction and --validation_seed")
    if "gan_validation" in record and gan_validation != held:
        raise DataFormatError(
            folder, f"was made by a GAN that trained on this run's validation split ({shown}) "
                    f"{where}: train the GAN with the same --validation_fraction and "
                    "--validation_seed")
