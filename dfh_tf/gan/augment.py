r"""Write an enlarged train split with a trained GAN: originals + N variants of each image.

    python -m dfh_tf.gan.augment --gan_dir runs/dfh_gan --out data/synthetic_gan \
        --variants_per_image 2
    python -m dcbh_tf.train --dataset folder --train_dir data/synthetic_gan/train \
        --test_dir data/synthetic/test ...

The source split is the GAN run's own train split unless --train_dir or --dataset
names another. --out/train is refused when it exists and is not empty (--overwrite
replaces it, only once the new one is complete).

--copies_only writes the ablation's control instead: every original repeated
1 + --variants_per_image times and nothing generated, so a method trained on it takes
as many steps per epoch as on the augmented split and the two differ only in what the
extra rows are (no --gan_dir needed).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

import numpy as np

from absl import flags

from common.cli import checks, runner
from common.cli.tf_startup import import_tensorflow
from common.data import DataFormatError, load_pickle_folder
from common.cli.checks import check_no_arguments
from common.cli.runner import EXIT_INTERRUPTED, fail
from dfh_tf.gan.augmentation import (INFO_FILE, TRAIN_SUBDIR, augment_rows, output_problem,
                                     write_augmented)
from dfh_tf.gan.data import DATASETS, resolve_folders
from dfh_tf.gan.run_folder import GanRunError, check_gan_run, latest_checkpoint_prefix

GAN_DIR = flags.DEFINE_string("gan_dir", None, "Run folder of python -m dfh_tf.gan.train.")
OUT = flags.DEFINE_string("out", None, "Output folder: OUT/train/part_NNN.pkl and "
                          "OUT/augment.json.")
DATASET = flags.DEFINE_enum("dataset", None, list(DATASETS), "Source data set (default: the "
                            "GAN run's train split).")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Parent folder of the source data set.")
TRAIN_DIR = flags.DEFINE_string("train_dir", None, "Source train split folder (overrides "
                                "--dataset and the run's).")
VARIANTS = flags.DEFINE_integer("variants_per_image", 1, "Generated variants of every image.",
                                lower_bound=1, upper_bound=1000)
SEED = flags.DEFINE_integer("seed", 0, "Seed of the variants' noise.", lower_bound=0)
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing OUT/train.")
COPIES_ONLY = flags.DEFINE_bool(
    "copies_only", False, "Write the augmentation ablation's control: every original "
    "repeated 1 + --variants_per_image times, nothing generated (no --gan_dir needed).")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per generator call.",
                                  lower_bound=1)
ROWS_PER_FILE = flags.DEFINE_integer("rows_per_file", 1000, "Rows per .pkl file.",
                                     lower_bound=1)
checks.bound_flag("seed", checks.MAX_SEED, "numpy's seed range")
checks.bound_flag("batch_size", checks.MAX_BATCH_SIZE, "a larger batch exhausts memory")


@contextlib.contextmanager
def _one_error_line() -> Iterator[None]:
    """An occupied output (FileExistsError) or Ctrl-C becomes one ``error:`` line; the
    split is written all or nothing, so nothing half-written is left behind."""
    try:
        yield
    except FileExistsError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; nothing was written", EXIT_INTERRUPTED)


def source_folder(run_config: dict) -> str:
    """The source train split: --train_dir, else --dataset's, else the GAN run's."""
    if TRAIN_DIR.value:
        return TRAIN_DIR.value
    if DATASET.value:
        if DATASET.value == "folder":
            fail("--dataset folder needs --train_dir")
        return resolve_folders(DATASET.value, DATA_DIR.value)[0]
    if not GAN_DIR.value:
        fail("--copies_only needs the source split: --train_dir or --dataset (or --gan_dir, "
             "whose train split is used)")
    folder = run_config.get("data", {}).get("train_dir")
    if not folder:
        fail(f"--gan_dir {GAN_DIR.value}: its config names no train split; pass --train_dir")
    return folder


def main(argv: list[str]) -> None:
    """Check everything that needs no TensorFlow, then generate and write."""
    check_no_arguments(argv)
    if not GAN_DIR.value and not COPIES_ONLY.value:
        fail("--gan_dir is required (the run folder of python -m dfh_tf.gan.train)")
    if not OUT.value:
        fail("--out is required (the folder to write train/ and augment.json into)")
    for flag in (GAN_DIR, OUT, DATA_DIR, TRAIN_DIR):
        checks.check_folder_flag(flag.name, flag.value)
    run_config: dict = {}
    if GAN_DIR.value:
        try:
            run_config = check_gan_run(GAN_DIR.value)
        except GanRunError as exc:
            fail(f"--gan_dir {exc}")
    problem = output_problem(OUT.value, OVERWRITE.value)
    if problem:
        fail(problem)
    try:
        source = os.path.abspath(source_folder(run_config))
        rows, labels = load_pickle_folder(source)
    except DataFormatError as exc:
        fail(f"bad data: {exc}")
    except (ValueError, OSError) as exc:
        fail(str(exc))
    total = len(labels) * (1 + VARIANTS.value)
    too_big = checks.image_memory_error(total + len(labels))
    if too_big:
        fail(f"--variants_per_image {VARIANTS.value}: {total:,} output rows: {too_big}")
    if COPIES_ONLY.value:
        write_copies(source, rows, labels)
        return
    print(f"augmenting {source} ({len(labels)} images) with {VARIANTS.value} variant(s) per "
          f"image from {GAN_DIR.value} into {os.path.join(OUT.value, TRAIN_SUBDIR)}", flush=True)
    start = time.perf_counter()
    import_tensorflow()  # once, its start-up notices filtered: TensorFlow from here on
    from dfh_tf.gan.run_folder import load_generator

    gan_dir = GAN_DIR.value
    assert gan_dir  # required unless --copies_only, which returned above
    try:
        generator, config = load_generator(gan_dir)
    except GanRunError as exc:
        fail(f"--gan_dir {exc}")
    noise_dim = config["settings"]["noise_dim"]
    with _one_error_line():
        x, y = augment_rows(generator, rows, labels, noise_dim, VARIANTS.value, SEED.value,
                            BATCH_SIZE.value)
        info = {
            "source_train_dir": source, "gan_dir": os.path.abspath(gan_dir),
            "gan_checkpoint": os.path.basename(latest_checkpoint_prefix(gan_dir) or ""),
            "original_images": int(len(labels)), "variants_per_image": VARIANTS.value,
            "generated_images": int(len(labels) * VARIANTS.value), "total_images": int(len(y)),
            "identities": int(len(set(labels.tolist()))), "seed": SEED.value,
            "row_order": "originals first, then variant 1 of every image, variant 2, ...",
        }
        train = write_augmented(OUT.value, x, y, info, OVERWRITE.value, ROWS_PER_FILE.value)
    print(f"wrote {len(y)} images ({len(labels)} originals + {len(labels) * VARIANTS.value} "
          f"generated) to {train} and {os.path.join(OUT.value, INFO_FILE)} in "
          f"{time.perf_counter() - start:.1f}s", flush=True)


def write_copies(source: str, rows: np.ndarray, labels: np.ndarray) -> None:
    """The control split: the originals 1 + --variants_per_image times, in that order."""
    out = OUT.value
    assert out  # checked by main()
    repeats = 1 + VARIANTS.value
    x, y = np.tile(rows, (repeats, 1)), np.tile(labels, repeats)
    info = {
        "source_train_dir": source, "control": "copies_only",
        "original_images": int(len(labels)), "copies_per_image": VARIANTS.value,
        "generated_images": 0, "total_images": int(len(y)),
        "identities": int(len(set(labels.tolist()))),
        "row_order": "the originals, then the same originals again, copy after copy",
    }
    with _one_error_line():
        train = write_augmented(out, x, y, info, OVERWRITE.value, ROWS_PER_FILE.value)
    print(f"wrote {len(y)} images ({len(labels)} originals x {repeats}, nothing generated) "
          f"to {train} and {os.path.join(out, INFO_FILE)}", flush=True)


def run() -> None:
    """Console-script entry point."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
