"""Enlarge a train split with a trained generator, in the project's pickle layout.

Output ``FOLDER/train/part_NNN.pkl``: the original rows first (byte-for-byte as read),
then ``variants`` generated variants of every image (variant 1 of all images, then
variant 2, ...), each with its source's label; float32 0..255 integers, channel-first
rows. ``FOLDER/train/.augment.json`` says where they came from (hidden: never read as
data) and carries their digest. Rows and record are written into a hidden temporary
folder swapped into place at the end, so a failure or a kill never leaves a partial
``train/``, nor rows beside a record that does not describe them (an old split is
replaced only after the new one is complete). Any method then trains on it with
``--dataset folder --train_dir FOLDER/train --test_dir ORIGINAL_TEST`` and
``--validation_fraction 0``: a validation split drawn from it would hold faces whose
variants stay in training (refused, common.data.extra_rows.check_train_folder).

Without the originals (``originals=False``, augment's ``--variants_only``) the split
holds the variants alone, variant 1 of every image first: the extra training rows a
hashing method reads with ``--extra_train_dir`` beside its own, unchanged train folder
(whose validation split and retrieval database then stay the original rows).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

import numpy as np
from absl import logging

from common.io import folder_swap
from common.io.locks import folder_lock
from common.io.atomic import JSON_TMP_SUFFIX, write_json_atomic
from common.data import list_data_files, to_nhwc, to_rows, write_pickle_folder
from common.data.extra_rows import RECORD_FILE, SPLIT_RECORD, rows_digest
from dfh_tf.gan.data import to_gan_pixels, to_stored_pixels
from dfh_tf.gan.sampling import draw_noise, generate

TRAIN_SUBDIR = "train"
INFO_FILE = SPLIT_RECORD  # in train/: what common.data.extra_rows checks before a run trains on it
OLD_INFO_FILE = RECORD_FILE  # beside train/, written by augment before: dropped on replacing it
NOISE_STREAM = 6


def output_problem(out_dir: str, overwrite: bool) -> str | None:
    """Why ``out_dir/train`` may not be written (None when it may)."""
    train = os.path.join(out_dir, TRAIN_SUBDIR)
    if os.path.lexists(train) and not os.path.isdir(train):
        return f"{train}: exists and is not a folder"
    if os.path.isdir(train) and os.listdir(train) and not overwrite:
        return (f"{train}: already exists and is not empty; pass --overwrite to replace it, "
                "or choose another --out")
    return None


def augment_rows(generator, rows: np.ndarray, labels: np.ndarray, noise_dim: int, variants: int,
                 seed: int, batch_size: int = 256, stream: TextIO | None = None,
                 originals: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The original rows followed by ``variants`` generated variants of each (the variants
    alone when not ``originals``).

    Args:
        generator: the trained G.
        rows: (n, 3072) 0..255 channel-first rows (copied unchanged to the first n rows).
        labels: (n,) labels.
        noise_dim: length of z.
        variants: variants per image (>= 1).
        seed: variant v's noise comes from ``(seed, 6, v)``.
        batch_size: images per generator call.
        stream: progress lines (default stdout).
        originals: put the original rows first; False: only the variants (the same
            variants, noise for noise, as with the originals).

    Returns:
        ``(x (n * (1 + variants), 3072) float32, y (n * (1 + variants),) int64)``; without
        the originals ``n * variants`` rows.
    """
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    stream = stream if stream is not None else sys.stdout
    n = len(labels)
    images = to_gan_pixels(to_nhwc(rows))
    first = n if originals else 0  # row of variant 1 of image 0
    x = np.empty((first + n * variants, rows.shape[1]), dtype=np.float32)
    if originals:
        x[:n] = rows
    start = last = time.perf_counter()
    for v in range(variants):
        def progress(done: int, v: int = v) -> None:
            nonlocal last
            now = time.perf_counter()
            if now - last >= 5.0 or (done == n and v == variants - 1):
                last = now
                total = v * n + done
                print(f"generated {total}/{n * variants} variants ({now - start:.0f}s)",
                      file=stream, flush=True)

        rng = np.random.default_rng([seed, NOISE_STREAM, v])
        fakes = generate(generator, images, draw_noise(rng, n, noise_dim), batch_size, progress)
        x[first + n * v:first + n * (v + 1)] = to_rows(to_stored_pixels(fakes))
    y = np.tile(np.asarray(labels, dtype=np.int64), (1 if originals else 0) + variants)
    return x, y


def owns_split(relative: str, is_dir: bool) -> bool:
    """What a written split holds: its ``.pkl`` parts and its record, with the record's
    temporary name (all that replacing it may delete)."""
    if is_dir or os.sep in relative:
        return False
    return relative.endswith(".pkl") or relative == INFO_FILE or (
        relative.startswith(f".{INFO_FILE}.") and relative.endswith(JSON_TMP_SUFFIX))


def _naming(exc: OSError, path: str) -> OSError:
    """``exc`` with ``path`` as its file where it names none (a full disk's write names
    nothing), so that its ``error:`` line says which output failed."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), path)


def _drop_old_record(out_dir: str) -> None:
    """Remove an older augment's record beside train/: it describes the rows just replaced
    (runs read the one inside train/ first; this keeps a reader of the folder from it)."""
    path = os.path.join(out_dir, OLD_INFO_FILE)
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logging.warning("%s: could not remove it (%s); it describes the rows replaced, "
                        "%s describes those written now", path, exc.strerror or exc,
                        os.path.join(out_dir, TRAIN_SUBDIR, INFO_FILE))


def write_augmented(out_dir: str, x: np.ndarray, y: np.ndarray, info: dict[str, Any],
                    overwrite: bool = False, rows_per_file: int = 1000) -> str:
    """Write ``out_dir/train``: its rows and ``train/.augment.json`` (``info`` and the rows'
    ``rows_sha256``) in one swap, so both or neither appear; return train's path.

    Raises:
        FileExistsError: ``out_dir/train`` exists, is not empty, and not ``overwrite``.
        OSError: writing failed (a full disk, say; it names the file or folder);
            ``out_dir/train`` is as it was.
    """
    problem = output_problem(out_dir, overwrite)
    if problem:
        raise FileExistsError(problem)
    os.makedirs(out_dir, exist_ok=True)
    train = os.path.join(out_dir, TRAIN_SUBDIR)
    # the digest a run takes of the rows as it reads them: load_pickle_folder gives back
    # these values as float32 and the labels as int64, which rows_digest hashes
    record = dict(info, rows_sha256=rows_digest(x, y))
    with folder_lock(train, lambda lock: FileExistsError(
            f"{train}: another augmentation is writing it (it holds {lock})")):
        folder_swap.remove_stale(train, owns_split)
        tmp = folder_swap.sibling(train, "tmp")
        os.mkdir(tmp, 0o777)
        try:
            try:
                write_pickle_folder(tmp, x, y, rows_per_file=rows_per_file)
            except OSError as exc:
                raise _naming(exc, train) from exc
            list_data_files(tmp)
            try:
                write_json_atomic(os.path.join(tmp, INFO_FILE), record)
            except OSError as exc:
                raise _naming(exc, os.path.join(train, INFO_FILE)) from exc
            folder_swap.fsync_tree(tmp)
            # Replacing deletes only what a split holds: a file someone else put into
            # train/ meanwhile stops this, train/ left as it is (FolderChangedError).
            folder_swap.swap_in_place(tmp, train, "augment", owns_split)
        finally:
            folder_swap.discard_or_keep(tmp, train, owns_split)
        _drop_old_record(out_dir)
    return train
