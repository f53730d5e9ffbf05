"""Run exactly one cell of the table, alone, in this process.

    python -m common.reproduce.run_cell --out runs/table --method dcbh --bits 48 \
        --dataset folder --train_dir /data/lfw/train --test_dir /data/lfw/test \
        --epochs 150 --batch_size 64 --width_multiplier 0.25 --eval_every 10

The harness (``python -m common.reproduce``) starts one such process per deep cell, so
no cell inherits another's state (common/reproduce/isolation.py), and records the
command in the cell's ``cell.json`` ("command"). Running that command again reuses the
finished cell; with another ``--out`` it re-runs the cell from scratch, alone. Flags
have the harness's names and defaults, plus ``--method``, ``--bits``, ``--top_k``,
``--radius`` and the synthetic set's generator settings.

Never import this module from another: its absl flags would clash with the harness's.
"""

from __future__ import annotations

from typing import Any

from absl import flags

from common.cli import checks, runner
from common.reproduce.isolation import CONFIG_FLAGS, SYNTHETIC_FLAGS, watch_parent

OUT = flags.DEFINE_string("out", None, "The table's output folder (the cell goes to "
                                       "OUT/cells/<method>_<bits>/).")
METHOD = flags.DEFINE_string("method", None, "The table row: a method (or one of its extra rows, "
                             "or itq / lsh), or method@width for a row at its own width.")
BITS = flags.DEFINE_integer("bits", None, "The code length.", lower_bound=1,
                            upper_bound=checks.MAX_BITS)
DATASET = flags.DEFINE_enum("dataset", "synthetic",
                            ["youtube_faces", "facescrub", "folder", "synthetic"], "Data set.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Parent folder of the split folders.")
TRAIN_DIR = flags.DEFINE_string("train_dir", None, "Train split folder.")
TEST_DIR = flags.DEFINE_string("test_dir", None, "Test split folder.")
EXTRA_TRAIN_DIR = flags.DEFINE_string("extra_train_dir", None, "Further training rows (not "
                                      "database, not validation; common.training.data).")
SYNTHETIC = {key: flags.DEFINE_integer(f"synthetic_{key}", None,
                                       f"Synthetic set: generator's {key} (checked against "
                                       "an existing set; generates it where absent).")
             for key in SYNTHETIC_FLAGS}
flags.DEFINE_integer("epochs", 100, "Epochs of a deep cell.", lower_bound=1,
                     upper_bound=checks.MAX_EPOCHS)
flags.DEFINE_integer("batch_size", 256, "Batch size of a deep cell.", lower_bound=1,
                     upper_bound=checks.MAX_BATCH_SIZE)
flags.DEFINE_bool("shuffle", True, "Reshuffle every epoch (seeded).")
SEED = flags.DEFINE_integer("seed", 0, "Seed of training and of the baselines.", lower_bound=0,
                            upper_bound=checks.MAX_SEED)
flags.DEFINE_float("validation_fraction", 0.1, "Share of each identity's train images held "
                   "out to choose the state on (the harness's default, DDH's protocol; 0: "
                   "chosen on the test split).",
                   lower_bound=0.0, upper_bound=0.9)
flags.DEFINE_integer("validation_seed", 0, "Seed of the validation split's draw.",
                     lower_bound=0, upper_bound=checks.MAX_SEED)
flags.DEFINE_integer("eval_every", 10, "Evaluation period of a deep cell.", lower_bound=0)
flags.DEFINE_float("width_multiplier", 1.0, "Backbone width of DCBH and DDCH.")
flags.register_validator("width_multiplier", lambda v: v > 0,
                         message="--width_multiplier must be > 0")
checks.bound_flag("width_multiplier", checks.MAX_WIDTH_MULTIPLIER, checks.WHY_WIDTH)
flags.DEFINE_enum("checkpoint", "best_map", ["best_map", "best_loss", "last"],
                  "Which state of the deep run is tabulated.")
flags.DEFINE_integer("top_k", 50, "K of precision@K.", lower_bound=1)
flags.DEFINE_integer("radius", 2, "Hamming radius of precision/recall.", lower_bound=0)
flags.DEFINE_enum("ties", "index", ["index", "expected"], "Tie rule of the figures.")
flags.DEFINE_bool("deterministic", False, "Deterministic TensorFlow ops (bit-identical reruns).")
flags.DEFINE_enum("sparse_adam", "tf1", ["tf1", "keras"],
                  "Adam on the centers' repeated rows: tf1 (the original's) or keras.")
flags.mark_flags_as_required(["out", "method", "bits"])
_MISSING = [name for name in CONFIG_FLAGS if name not in flags.FLAGS]
assert not _MISSING, f"run_cell defines no flag for the cell settings {_MISSING}"


@flags.validator("method", message="--method must be a method of the table, or method@width "
                                   "with a width > 0 for a method that has one")
def _known_row(value: str | None) -> bool:
    from common.reproduce.methods import parse_row
    try:
        return value is None or bool(parse_row(value))
    except ValueError:
        return False


def main(argv: list[str]) -> None:
    """Load the data, run (or reuse) the one cell, write its cell.json."""
    checks.check_no_arguments(argv)
    checks.check_folder_flag("out", OUT.value)
    from absl import logging

    from common.training.data import load_split_data  # no TensorFlow: bad data fails fast

    logging.set_verbosity(logging.INFO)
    watch_parent()
    synthetic = {k: f.value for k, f in SYNTHETIC.items() if f.value is not None}
    try:
        data = load_split_data(DATASET.value, DATA_DIR.value, TRAIN_DIR.value, TEST_DIR.value,
                               synthetic_kwargs=synthetic or None,
                               validation_fraction=flags.FLAGS.validation_fraction,
                               validation_seed=flags.FLAGS.validation_seed,
                               extra_train_dir=EXTRA_TRAIN_DIR.value)
    except ValueError as exc:  # "folder" without its folders, or the data's own errors
        known = runner.user_error(exc)
        runner.fail(known[0] if known else str(exc))
    from common.cli.tf_startup import import_tensorflow

    import_tensorflow()  # once, its start-up notices filtered
    from common.reproduce.cells import run_cell
    from common.reproduce.layout import cell_dir
    from common.reproduce.harness import ReproduceConfig, cell_settings
    from common.reproduce.isolation import cell_argv, command_record
    from common.reproduce.methods import is_deep
    from common.reproduce.report import state_phrase
    from common.io.locks import run_lock

    row, bits, seed, out = METHOD.value, BITS.value, SEED.value, OUT.value
    assert row is not None and bits is not None and out is not None  # required flags
    settings: dict[str, Any] = {name: flags.FLAGS[name].value for name in CONFIG_FLAGS}
    config = ReproduceConfig(out=out, methods=[row], bits=[bits], seeds=[seed], **settings)
    try:
        config.validate()
    except ValueError as exc:
        runner.fail(str(exc))
    row = config.methods[0]  # its one spelling ("ddah@1.0" -> "ddah@1"): the cell's folder
    command = command_record(cell_argv(config, row, bits, data.description, seed=seed))
    with run_lock(cell_dir(config.out, row, bits, seed)):
        cell = run_cell(config.out, row, bits, data, cell_settings(config, data, row, seed),
                        command)
    state = (state_phrase(cell.get("checkpoint", config.checkpoint),
                          cell.get("selected_on", "test")) if is_deep(row)
             else "fitted: no state to choose")
    print(f"{row} {bits} bits, seed {seed}: mAP {cell['figures']['exact']['map']:.4f} "
          f"(exact Hamming, {state}); {cell_dir(config.out, row, bits, seed)}")


def run() -> None:
    """Entry point (one-line errors, SIGTERM as an interrupt: common.cli.runner.run_main)."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
