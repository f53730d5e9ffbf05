"""Enlarge a train split with a trained generator, in the project's pickle layout.

Output ``FOLDER/train/part_NNN.pkl``: the original rows first (byte-for-byte as read),
then ``variants`` generated variants of every image (variant 1 of all images, then
variant 2, ...), each with its source's label; float32 0..255 integers, channel-first
rows. ``FOLDER/augment.json`` says where it came from. The split is written into a
hidden temporary folder and renamed into place at the end, so a failure or a kill
never leaves a partial ``train/`` (an old one is replaced only after the new one is
complete). Any method then trains on it with ``--dataset folder --train_dir
FOLDER/train --test_dir ORIGINAL_TEST``.

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

from common.io import folder_swap
from common.io.locks import folder_lock
from common.io.atomic import write_json_atomic
from common.data import list_data_files, to_nhwc, to_rows, write_pickle_folder
from common.data.extra_rows import RECORD_FILE
from dfh_tf.gan.data import to_gan_pixels, to_stored_pixels
from dfh_tf.gan.sampling import draw_noise, generate

TRAIN_SUBDIR = "train"
INFO_FILE = RECORD_FILE  # what common.data.extra_rows checks before a run trains on the rows
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
    """What a written split holds: its ``.pkl`` parts (all that replacing it may delete)."""
    return not is_dir and os.sep not in relative and relative.endswith(".pkl")


def write_augmented(out_dir: str, x: np.ndarray, y: np.ndarray, info: dict[str, Any],
                    overwrite: bool = False, rows_per_file: int = 1000) -> str:
    """Write ``out_dir/train`` (all or nothing) and ``out_dir/augment.json``; return train's path.

    Raises:
        FileExistsError: ``out_dir/train`` exists, is not empty, and not ``overwrite``.
    """
    problem = output_problem(out_dir, overwrite)
    if problem:
        raise FileExistsError(problem)
    os.makedirs(out_dir, exist_ok=True)
    train = os.path.join(out_dir, TRAIN_SUBDIR)
    with folder_lock(train, lambda lock: FileExistsError(
            f"{train}: another augmentation is writing it (it holds {lock})")):
        folder_swap.remove_stale(train, owns_split)
        tmp = folder_swap.sibling(train, "tmp")
        os.mkdir(tmp, 0o777)
        try:
            write_pickle_folder(tmp, x, y, rows_per_file=rows_per_file)
            list_data_files(tmp)
            folder_swap.fsync_tree(tmp)
            # Replacing deletes only the .pkl parts a split holds: a file someone else put
            # into train/ meanwhile stops this, train/ left as it is (FolderChangedError).
            folder_swap.swap_in_place(tmp, train, "augment", owns_split)
        finally:
            folder_swap.discard_or_keep(tmp, train, owns_split)
    write_json_atomic(os.path.join(out_dir, INFO_FILE), info)
    return train
