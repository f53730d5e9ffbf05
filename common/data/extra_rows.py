"""Where extra training rows came from, and whether they may join a run.

Why: extra rows (``--extra_train_dir``: GAN variants, or their control of copies) are made
from a train folder's faces. Made from faces a run holds out for validation, by a GAN that
saw them, or taken from its test folder, they would let training see the faces its state
is chosen on or scored on, and nothing in the figures would show it. A folder written by
``python -m dfh_tf.gan.augment`` carries a record of its making (``RECORD_FILE`` beside
it: ``OUT/train`` and ``OUT/augment.json``), checked here against the run; a folder
without one is accepted with a note, since the library cannot know where its rows came
from. TensorFlow-free.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from absl import logging

from common.data.errors import DataFormatError
from common.io import json_files

RECORD_FILE = "augment.json"  # beside the rows' folder, written by dfh_tf.gan.augment


def rows_digest(rows: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the rows as read (pixels, float32) and their labels: which rows these are,
    so that a run resumes, and a table cell is reused, only with the very same rows."""
    digest = hashlib.sha256(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


def read_record(folder: str) -> dict[str, Any] | None:
    """The making record beside ``folder`` (None where there is none).

    Raises:
        DataFormatError: the record exists but is damaged (it names the file).
    """
    path = os.path.join(os.path.dirname(os.path.abspath(folder)), RECORD_FILE)
    if not os.path.exists(path):
        return None
    try:
        record = json_files.load(path)
    except (OSError, ValueError) as exc:
        raise DataFormatError(path, f"damaged ({exc}); it says how the extra rows of "
                                    f"{folder} were made") from None
    if not isinstance(record, dict):
        raise DataFormatError(path, "damaged (not a JSON object)")
    return record


def _split(value: Any) -> tuple[float, int] | None:
    """(fraction, seed) of a recorded validation split, None for none."""
    if not isinstance(value, dict) or not value.get("fraction"):
        return None
    return float(value["fraction"]), int(value.get("seed", 0))


def _same_folder(a: str, b: str | None) -> bool:
    if not b:
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def check_extra_rows(folder: str, description: dict[str, Any]) -> None:
    """Refuse extra rows that would carry a held-out or test face into training.

    ``description``: the run's data (``SplitData.description``: train_dir, test_dir and its
    ``validation`` split, if any). Checked: the folder is neither the train nor the test
    folder; where it has a making record, it holds no originals (``--variants_only``), was
    made from this train folder, without the rows of this run's validation split, by a GAN
    that did not train on them.

    Raises:
        DataFormatError: one of those fails (the message names the folder and the fix).
    """
    for split in ("train", "test"):
        if _same_folder(folder, description.get(f"{split}_dir")):
            raise DataFormatError(folder, f"is the run's {split} folder; extra training rows "
                                          "are rows the splits do not hold (e.g. GAN variants)")
    record = read_record(folder)
    if record is None:
        logging.info("extra training rows %s carry no record of how they were made (%s): "
                     "make sure none is a face of the validation or test split, or a "
                     "variant of one", folder, RECORD_FILE)
        return
    where = f"(its {RECORD_FILE})"
    if not record.get("variants_only"):
        raise DataFormatError(folder, f"holds the original rows as well as the new ones {where}: "
                                      "they would be trained on twice, held-out ones included; "
                                      "write it with augment --variants_only")
    source = record.get("source_train_dir")
    train_dir = description.get("train_dir")
    if source and train_dir and not _same_folder(source, train_dir):
        raise DataFormatError(folder, f"was made from {source}, not from this run's train "
                                      f"folder {train_dir} {where}")
    held = _split(description.get("validation"))
    if held is None:
        return  # nothing held out: no face to keep away from training
    shown = f"fraction {held[0]:g}, seed {held[1]}"
    made = _split(record.get("validation"))
    if made != held:
        raise DataFormatError(
            folder, f"was made from rows that include this run's validation split ({shown}) "
                    f"{where}: variants of faces the state is chosen on would be trained on; "
                    "make it with the same --validation_fraction and --validation_seed")
    if "gan_validation" in record and _split(record["gan_validation"]) != held:
        raise DataFormatError(
            folder, f"was made by a GAN that trained on this run's validation split ({shown}) "
                    f"{where}: train the GAN with the same --validation_fraction and "
                    "--validation_seed")
