"""Command line of the synthetic data set: ``python -m common.synthetic --out DIR ...``.

The flags live here, not in the generator module, so that programs importing the
generator (training runs with their own ``--seed``) do not collide with them.
"""

from __future__ import annotations

import os

from absl import flags

from common.cli import checks, runner
from common.cli.checks import check_no_arguments
from common.cli.runner import fail
from common.synthetic.generator import write_synthetic_dataset

# `--out` has no default and is checked in main, so --help works without it.
_OUT = flags.DEFINE_string("out", None, "Output folder: train/, test/ and meta.json go there.")
_NUM_IDENTITIES = flags.DEFINE_integer("num_identities", 100, "Number of identities (labels).",
                                       lower_bound=1)
_TRAIN_PER_IDENTITY = flags.DEFINE_integer("train_per_identity", 40,
                                           "Train images per identity.", lower_bound=1)
_TEST_PER_IDENTITY = flags.DEFINE_integer("test_per_identity", 5,
                                          "Test images per identity.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed; the same arguments give byte-identical files.",
                             lower_bound=0)
_ROWS_PER_FILE = flags.DEFINE_integer("rows_per_file", 1000, "Rows per .pkl file.",
                                      lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False,
                               "Replace .pkl files already in DIR/train and DIR/test.")
checks.bound_flag("seed", checks.MAX_SEED, "numpy's seed range")


@flags.multi_flags_validator(["num_identities", "train_per_identity", "test_per_identity"])
def _set_fits(values: dict) -> bool:
    """Refuse a set too big for this machine before generating any of it."""
    images = values["num_identities"] * (values["train_per_identity"]
                                         + values["test_per_identity"])
    problem = checks.image_memory_error(images)
    if problem:
        raise flags.ValidationError(
            "the data set is too large: --num_identities x (--train_per_identity + "
            f"--test_per_identity) = {problem}")
    return True


def main(argv: list[str]) -> None:
    """Write the data set the flags describe and print where it went."""
    check_no_arguments(argv)
    if not _OUT.value:
        fail("--out is required (the folder to write train/ and test/ into)")
    checks.check_folder_flag("out", _OUT.value)
    try:
        meta = write_synthetic_dataset(
            _OUT.value, num_identities=_NUM_IDENTITIES.value,
            train_per_identity=_TRAIN_PER_IDENTITY.value,
            test_per_identity=_TEST_PER_IDENTITY.value, seed=_SEED.value,
            rows_per_file=_ROWS_PER_FILE.value, overwrite=_OVERWRITE.value)
    except (FileExistsError, ValueError) as exc:
        fail(str(exc))
    print(f"wrote synthetic data set to {os.path.abspath(_OUT.value)}: "
          f"train {meta['train_images']} images, test {meta['test_images']} images, "
          f"{meta['num_identities']} identities "
          f"({meta['train_per_identity']}+{meta['test_per_identity']} per identity), "
          f"seed {meta['seed']}")


def run() -> None:
    """Console entry point (``face-hash-synthetic``); one-line errors (runner.run_main)."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
