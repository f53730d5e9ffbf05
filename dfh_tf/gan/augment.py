r"""Write an enlarged train split with a trained GAN: originals + N variants of each image.

    python -m dfh_tf.gan.augment --gan_dir runs/dfh_gan --out data/synthetic_gan \
        --variants_per_image 2
    python -m dcbh_tf.train --dataset folder --train_dir data/synthetic_gan/train \
        --test_dir data/synthetic/test --validation_fraction 0 ...

Such a split is a --train_dir only without a validation split (--validation_fraction 0,
states chosen on the test split as the earlier measurements did): one drawn from it
would hold faces whose variants stay in training, and is refused. With a validation
split, write --variants_only and give it as --extra_train_dir (below).

The source split is the GAN run's own train split unless --train_dir or --dataset
names another; variants are made only of the folder the GAN trained on, as it was then
(another one, or one changed since, is refused: the GAN may have seen faces its runs hold
out). --out/train is refused when it exists and is not empty (--overwrite replaces it,
only once the new one is complete). Its record, --out/train/.augment.json, is written
with the rows in one swap; it names the source folder, the GAN's, and the digests of the
source's rows and of the rows written, which a hashing run checks.

--copies_only writes the ablation's control instead: every original repeated
1 + --variants_per_image times and nothing generated, so a method trained on it takes
as many steps per epoch as on the augmented split and the two differ only in what the
extra rows are (no --gan_dir needed).

--variants_only writes the generated variants alone (no originals): the extra training
rows a hashing method reads with --extra_train_dir beside its unchanged --train_dir, so
its retrieval database and validation split stay the original rows:

    python -m dfh_tf.gan.augment --gan_dir runs/dfh_gan --variants_only --out /tmp/variants
    python -m dcbh_tf.train --dataset folder --train_dir T --extra_train_dir \
        /tmp/variants/train --test_dir V --validation_fraction 0.1 ...

Validation split: only the rows that common.data.validation_split keeps get variants
(and, without --variants_only, are copied), so no variant of a held-out face is trained
on. By default that is the split the GAN run recorded (python -m dfh_tf.gan.train
--validation_fraction), when the source is the GAN run's own train split; otherwise no
split, unless --validation_fraction (and --validation_seed) name one. --copies_only
skips the same rows. The record holds the split ("validation").
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator

import numpy as np

from absl import flags, logging

from common.cli import checks, runner
from common.cli.tf_startup import import_tensorflow
from common.data import DataFormatError, load_pickle_folder
from common.data.extra_rows import rows_digest
from common.cli.checks import check_no_arguments
from common.cli.runner import EXIT_INTERRUPTED, fail
from common.data.validation_split import DEFAULT_SEED as DEFAULT_VALIDATION_SEED
from dfh_tf.gan.augmentation import (INFO_FILE, TRAIN_SUBDIR, augment_rows, output_problem,
                                     write_augmented)
from common.data.validation_split import checked_validation_indices
from dfh_tf.gan.data import DATASETS, NO_VALIDATION, resolve_folders
from dfh_tf.gan.run_folder import GanRunError, check_gan_run, latest_checkpoint_prefix

GAN_DIR = flags.DEFINE_string("gan_dir", None, "Run folder of python -m dfh_tf.gan.train.")
OUT = flags.DEFINE_string("out", None, "Output folder: OUT/train/part_NNN.pkl and "
                          "OUT/train/.augment.json.")
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
VARIANTS_ONLY = flags.DEFINE_bool(
    "variants_only", False, "Write only the generated variants, no originals: the extra "
    "training split of a hashing run's --extra_train_dir.")
VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction", None, "Make variants (and copy originals) only of the rows a "
    "validation split of this share of each identity's images keeps (common.data."
    "validation_split, seeded by --validation_seed; 0: every row). Default: the split the "
    "GAN run recorded when the source is its own train split, else every row.",
    lower_bound=0.0, upper_bound=0.9)
VALIDATION_SEED = flags.DEFINE_integer(
    "validation_seed", None, "Seed of that validation split (with --validation_fraction; "
    f"default {DEFAULT_VALIDATION_SEED}, the hashing runs' default).", lower_bound=0)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per generator call.",
                                  lower_bound=1)
ROWS_PER_FILE = flags.DEFINE_integer("rows_per_file", 1000, "Rows per .pkl file.",
                                     lower_bound=1)
checks.bound_flag("seed", checks.MAX_SEED, "numpy's seed range")
checks.bound_flag("batch_size", checks.MAX_BATCH_SIZE, "a larger batch exhausts memory")
checks.bound_flag("validation_seed", checks.MAX_SEED, "numpy's seed range")
checks.finite_flag("validation_fraction")


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


def _recorded_split(run_config: dict) -> dict | None:
    """The validation split the GAN run's config records (None: trained on every row)."""
    data = run_config.get("data")
    record = data.get("validation") if isinstance(data, dict) else None
    if record is None:
        return None
    try:
        assert isinstance(data, dict)
        return {"fraction": float(record["fraction"]), "seed": int(record["seed"]),
                "images": int(record["images"]), "train_images": int(data["train_images"])}
    except (KeyError, TypeError, ValueError):
        fail(f"--gan_dir {GAN_DIR.value}: its config's validation split is damaged "
             f"({record!r}); pass --validation_fraction and --validation_seed")


def validation_split(source: str, labels: np.ndarray, run_config: dict
                     ) -> tuple[np.ndarray, dict | None]:
    """The source rows to augment (sorted indices) and the record's ``"validation"``
    entry (None without a split), from the flags or the GAN run's recorded split.

    Why the GAN's split by default: a GAN trained without the validation faces must not
    have them brought back as variants (or copies) of the rows it augments.
    """
    fraction, seed = VALIDATION_FRACTION.value, VALIDATION_SEED.value
    data = run_config.get("data")
    gan_train = data.get("train_dir") if isinstance(data, dict) else None
    gans_own = isinstance(gan_train, str) and (
        os.path.realpath(source) == os.path.realpath(gan_train))
    recorded = _recorded_split(run_config) if gans_own else None
    origin = "flags"
    if fraction is None:
        if recorded is None:
            if not gans_own and _recorded_split(run_config) is not None:
                logging.warning("the GAN run %s held out a validation split of its own train "
                                "folder, but %s is another folder: every row of it is "
                                "augmented (--validation_fraction and --validation_seed hold "
                                "rows out of it)", GAN_DIR.value, source)
            return np.arange(len(labels), dtype=np.int64), None
        fraction, seed, origin = recorded["fraction"], recorded["seed"], "gan_run"
    seed = DEFAULT_VALIDATION_SEED if seed is None else seed
    if gans_own and origin == "flags" and (
            (recorded or {}).get("fraction", 0.0), (recorded or {}).get("seed", seed)) != (
            fraction, seed):
        shown = (f"fraction {recorded['fraction']:g}, seed {recorded['seed']}" if recorded
                 else "nothing")
        logging.warning("the GAN run %s held out %s, this augmentation --validation_fraction "
                        "%g --validation_seed %d: a hashing run selected on either split may "
                        "find faces of its validation split in the GAN or in this split",
                        GAN_DIR.value, shown, fraction, seed)
    try:
        kept, held = checked_validation_indices(labels, fraction, seed, source,
                                                without=NO_VALIDATION)
    except DataFormatError as exc:
        fail(f"bad data: {exc}")
    except ValueError as exc:
        fail(str(exc))
    if recorded is not None and origin == "gan_run" and (
            len(held), len(kept)) != (recorded["images"], recorded["train_images"]):
        fail(f"{source}: the GAN run {GAN_DIR.value} held out {recorded['images']} of "
             f"{recorded['images'] + recorded['train_images']} rows, the folder now gives "
             f"{len(held)} of {len(labels)}: it changed since; pass --validation_fraction and "
             "--validation_seed explicitly (0: every row)")
    if not len(held):
        return kept, None
    return kept, {"fraction": float(fraction), "seed": int(seed), "images": int(len(held)),
                  "source_images": int(len(labels)), "from": origin}


def main(argv: list[str]) -> None:
    """Check everything that needs no TensorFlow, then generate and write."""
    check_no_arguments(argv)
    if not GAN_DIR.value and not COPIES_ONLY.value:
        fail("--gan_dir is required (the run folder of python -m dfh_tf.gan.train)")
    if not OUT.value:
        fail("--out is required (the folder to write train/ and its record into)")
    if VALIDATION_SEED.value is not None and not VALIDATION_FRACTION.value:
        fail(checks.SEED_WITHOUT_FRACTION)
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
    source_sha256 = rows_digest(rows, labels)  # all rows, as a hashing run reads its folder
    if not COPIES_ONLY.value:
        check_gan_source(source, source_sha256, run_config)
    kept, validation = validation_split(source, labels, run_config)
    if validation:
        rows, labels = rows[kept], labels[kept]
    n = len(labels)
    total = n * ((0 if VARIANTS_ONLY.value else 1) + VARIANTS.value)
    too_big = checks.image_memory_error(total + n)
    if too_big:
        fail(f"--variants_per_image {VARIANTS.value}: {total:,} output rows: {too_big}")
    if COPIES_ONLY.value:
        write_copies(source, rows, labels, validation, source_sha256)
        return
    held = (f", without the {validation['images']} rows of the validation split (fraction "
            f"{validation['fraction']:g}, seed {validation['seed']})" if validation else "")
    print(f"augmenting {source} ({n} images{held}) with {VARIANTS.value} variant(s) per "
          f"image from {GAN_DIR.value} into {os.path.join(OUT.value, TRAIN_SUBDIR)}"
          + (" (variants only)" if VARIANTS_ONLY.value else ""), flush=True)
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
        originals = not VARIANTS_ONLY.value
        x, y = augment_rows(generator, rows, labels, noise_dim, VARIANTS.value, SEED.value,
                            BATCH_SIZE.value, originals=originals)
        info: dict[str, Any] = {
            "source_train_dir": source, "source_sha256": source_sha256,
            "gan_dir": os.path.abspath(gan_dir), "gan_train_dir": gan_train_dir(run_config),
            "gan_checkpoint": os.path.basename(latest_checkpoint_prefix(gan_dir) or ""),
            "original_images": n if originals else 0, "variants_per_image": VARIANTS.value,
            "generated_images": n * VARIANTS.value, "total_images": int(len(y)),
            "identities": int(len(set(labels.tolist()))), "seed": SEED.value,
            "row_order": "originals first, then variant 1 of every image, variant 2, ...",
        }
        gan_split = _recorded_split(run_config)  # which faces the GAN itself trained without
        info["gan_validation"] = ({"fraction": gan_split["fraction"], "seed": gan_split["seed"]}
                                  if gan_split else None)
        if not originals:
            info.update(variants_only=True, source_images=n,
                        row_order="variant 1 of every source image, then variant 2, ... "
                                  "(no originals)")
        if validation:
            info["validation"] = validation
        train = write_augmented(OUT.value, x, y, info, OVERWRITE.value, ROWS_PER_FILE.value)
    what = (f"{n} originals + {n * VARIANTS.value} generated" if originals
            else f"generated only, {VARIANTS.value} of each of {n} images")
    print(f"wrote {len(y)} images ({what}) to {train} and {os.path.join(train, INFO_FILE)} "
          f"in {time.perf_counter() - start:.1f}s", flush=True)


def gan_train_dir(run_config: dict) -> str | None:
    """The folder the GAN run trained on (real path), None where its config names none."""
    data = run_config.get("data")
    folder = data.get("train_dir") if isinstance(data, dict) else None
    return os.path.realpath(folder) if isinstance(folder, str) and folder else None


def check_gan_source(source: str, source_sha256: str, run_config: dict) -> None:
    """Refuse making variants of another folder than the GAN trained on, or of its rows
    changed since: the GAN may have trained on faces that folder's runs hold out or test
    on, which no record of this split could show."""
    trained_on = gan_train_dir(run_config)
    if trained_on and trained_on != os.path.realpath(source):
        fail(f"{source}: the GAN run {GAN_DIR.value} trained on {trained_on}, not on this "
             "folder: its variants could carry faces that this folder's runs hold out or test "
             f"on; augment {trained_on}, or train a GAN on {source} (python -m "
             "dfh_tf.gan.train --dataset folder --train_dir ...)")
    data = run_config.get("data")
    recorded = data.get("train_sha256") if isinstance(data, dict) else None
    if recorded and recorded != source_sha256:
        fail(f"{source}: its rows changed since the GAN run {GAN_DIR.value} trained on them "
             "(another digest): train the GAN again on the folder as it is now")


def write_copies(source: str, rows: np.ndarray, labels: np.ndarray,
                 validation: dict | None = None, source_sha256: str | None = None) -> None:
    """The control split: the originals 1 + --variants_per_image times, in that order
    (``rows`` already without a validation split's rows, recorded as ``validation``).
    With --variants_only, the --variants_per_image copies alone: the control of a
    ``--variants_only`` split given as ``--extra_train_dir``."""
    out = OUT.value
    assert out  # checked by main()
    copies_alone = VARIANTS_ONLY.value
    repeats = VARIANTS.value if copies_alone else 1 + VARIANTS.value
    x, y = np.tile(rows, (repeats, 1)), np.tile(labels, repeats)
    info: dict[str, Any] = {
        "source_train_dir": source, "source_sha256": source_sha256, "control": "copies_only",
        "original_images": 0 if copies_alone else int(len(labels)),
        "copies_per_image": VARIANTS.value,
        "generated_images": 0, "total_images": int(len(y)),
        "identities": int(len(set(labels.tolist()))),
        "row_order": "the originals, then the same originals again, copy after copy",
    }
    if copies_alone:
        info.update(variants_only=True, source_images=int(len(labels)),
                    row_order="copy 1 of every source image, then copy 2, ... (no originals: "
                              "the control of a --variants_only split)")
    if validation:
        info["validation"] = validation
    with _one_error_line():
        train = write_augmented(out, x, y, info, OVERWRITE.value, ROWS_PER_FILE.value)
    copies = f"{VARIANTS.value} cop{'y' if VARIANTS.value == 1 else 'ies'}"
    what = (f"{copies} of each of {len(labels)} originals, without them"
            if copies_alone else f"{len(labels)} originals x {repeats}")
    print(f"wrote {len(y)} images ({what}, nothing generated) to {train} and "
          f"{os.path.join(train, INFO_FILE)}", flush=True)


def run() -> None:
    """Console-script entry point."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
