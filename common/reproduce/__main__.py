"""Reproduce the DCBH table: every method x bit length, tables and figures in one folder.

    python -m common.reproduce --dataset facescrub --data_dir /path/to/ddh_folders \
        --bits 12,24,36,48 --methods dcbh,ddch,ddh,itq,lsh --epochs 100 --out results/fs
    ./run.sh reproduce --dataset synthetic --bits 12,48 --methods dcbh,itq --epochs 5 --out /tmp/r

Re-running the same command resumes: finished cells are reused, an interrupted deep
cell continues from its last completed epoch. Every deep cell runs in a fresh process
(``python -m common.reproduce.run_cell``, the command kept in its ``cell.json``).
``--epochs 2000`` is the original schedule.
"""

from __future__ import annotations

from absl import flags

from common.cli import checks, runner
from common.cli.checks import check_no_arguments
from common.cli.runner import EXIT_INTERRUPTED, fail

DATASET = flags.DEFINE_enum("dataset", "synthetic",
                            ["youtube_faces", "facescrub", "folder", "synthetic"],
                            "Data set (as the train commands).")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Parent folder of the split folders.")
TRAIN_DIR = flags.DEFINE_string("train_dir", None, "Train split folder (--dataset folder).")
TEST_DIR = flags.DEFINE_string("test_dir", None, "Test split folder (--dataset folder).")
EXTRA_TRAIN_DIR = flags.DEFINE_string(
    "extra_train_dir", None, "Further training rows for every deep cell (generated variants: "
    "python -m dfh_tf.gan.augment --variants_only): trained on, never database items, never "
    "drawn into the validation split.")
METHODS = flags.DEFINE_list("methods", ["dcbh", "ddch", "ddh", "itq", "lsh"],
                            "Methods (rows of the table): every registered method and its "
                            "extra rows (ablations), itq and lsh; "
                            "method@width is a row at its own width (e.g. ddah@1: DDAH at "
                            "its published size beside rows at --width_multiplier; at most "
                            "8, spelled method@{width:g}: ddah@1.0 is ddah@1).")
BITS = flags.DEFINE_list("bits", ["12", "24", "36", "48"], "Code lengths (columns).")
EPOCHS = flags.DEFINE_integer("epochs", 100, "Epochs per deep cell (the original: 2000).",
                              lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Batch size of the deep methods.",
                                  lower_bound=1)
SHUFFLE = flags.DEFINE_bool("shuffle", True, "Reshuffle every epoch (seeded).")
SEED = flags.DEFINE_integer("seed", 0, "Seed of training and of the baselines (one seed; "
                            "see --seeds).", lower_bound=0)
SEEDS = flags.DEFINE_list("seeds", [], "Several seeds: every cell runs once per seed and the "
                          "tables give mean +- sample standard deviation (overrides --seed).")
VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction", 0.1, "Share of each identity's train images held out as the "
    "validation split (DDH's protocol: 0.1); the tabulated state is chosen on it and the test "
    "split is scored once. 0: chosen on the test split, as the original code did (the table "
    "says so).", lower_bound=0.0, upper_bound=0.9)
VALIDATION_SEED = flags.DEFINE_integer(
    "validation_seed", 0, "Seed of the validation split's draw (the same rows for every "
    "seed and method).", lower_bound=0)
EVAL_EVERY = flags.DEFINE_integer("eval_every", 10, "Evaluation period of the deep methods.",
                                  lower_bound=0)
WIDTH = flags.DEFINE_float("width_multiplier", 1.0, "Backbone width of every deep row whose "
                           "method has one (all but DDH), unless the row names its own "
                           "(method@width).")
CHECKPOINT = flags.DEFINE_enum("checkpoint", "best_map", ["best_map", "best_loss", "last"],
                               "Which state of each deep run is tabulated.")
TIES = flags.DEFINE_enum("ties", "index", ["index", "expected"], "Tie rule of the figures.")
DETERMINISTIC = flags.DEFINE_bool("deterministic", False,
                                  "Deterministic TensorFlow ops in every deep cell (a re-run "
                                  "gives bit-identical codes on the same machine and software).")
SPARSE_ADAM = flags.DEFINE_enum(
    "sparse_adam", "tf1", ["tf1", "keras"],
    "Adam on the centers' repeated rows in every deep cell: tf1 sums them first, as the "
    "original's Adam did; keras is Keras 3's per-row update (the tables before 2026-12).")
OUT = flags.DEFINE_string("out", None, "Output folder (results.md, results.csv, PNGs, cells/).")
FINISHED_ONLY = flags.DEFINE_bool(
    "finished_only", False, "Run no cell: write the tables from the cells that have finished "
    "with these settings (the rest shown as - and listed), e.g. while a long table runs (it "
    "takes no lock: it only reads cells and replaces the tables whole).")
checks.bound_flag("epochs", checks.MAX_EPOCHS, "a run that long never ends")
checks.bound_flag("batch_size", checks.MAX_BATCH_SIZE, "a larger batch exhausts memory")
flags.register_validator("width_multiplier", lambda v: v > 0,
                         message="--width_multiplier must be > 0")
checks.bound_flag("width_multiplier", checks.MAX_WIDTH_MULTIPLIER, checks.WHY_WIDTH)
checks.bound_flag("seed", checks.MAX_SEED, "numpy's seed range")
checks.bound_flag("validation_seed", checks.MAX_SEED, "numpy's seed range")
checks.finite_flag("validation_fraction")


@flags.validator("seeds", message=f"--seeds must be integers from 0 to {checks.MAX_SEED}")
def _seeds_in_range(values: list[str]) -> bool:
    try:
        return all(0 <= int(v) <= checks.MAX_SEED for v in values)
    except ValueError:
        return False


@flags.validator("bits", message=f"--bits must be integers from 1 to {checks.MAX_BITS} "
                                 f"({checks.WHY_BITS})")
def _bits_in_range(values: list[str]) -> bool:
    """Every code length a whole number the methods can build."""
    try:
        return bool(values) and all(1 <= int(v) <= checks.MAX_BITS for v in values)
    except ValueError:
        return False


def main(argv: list[str]) -> None:
    """Run every cell the flags name and write the tables; bad input: one ``error:`` line."""
    check_no_arguments(argv)
    if not OUT.value:
        fail("--out is required")
    checks.check_folder_flag("out", OUT.value)
    try:
        bits = [int(b) for b in BITS.value]
    except ValueError:
        fail(f"--bits must be integers, got {','.join(BITS.value)}")
    from common.data import DataFormatError
    from common.training.data import load_split_data

    from common.reproduce.harness import ReproduceConfig, reproduce
    from common.reproduce.cells import CellSettingsError
    from common.reproduce.isolation import CellProcessError

    config = ReproduceConfig(out=OUT.value, methods=METHODS.value, bits=bits, epochs=EPOCHS.value,
                             batch_size=BATCH_SIZE.value, shuffle=SHUFFLE.value, seed=SEED.value,
                             seeds=[int(v) for v in SEEDS.value],
                             validation_fraction=VALIDATION_FRACTION.value,
                             validation_seed=VALIDATION_SEED.value,
                             eval_every=EVAL_EVERY.value, width_multiplier=WIDTH.value,
                             checkpoint=CHECKPOINT.value, ties=TIES.value,
                             deterministic=DETERMINISTIC.value, sparse_adam=SPARSE_ADAM.value,
                             finished_only=FINISHED_ONLY.value)
    try:
        config.validate()
        data = load_split_data(DATASET.value, DATA_DIR.value, TRAIN_DIR.value, TEST_DIR.value,
                               extra_train_dir=EXTRA_TRAIN_DIR.value)
        reproduce(config, data)
    except (DataFormatError, CellSettingsError, ValueError, OSError) as exc:
        known = runner.user_error(exc)
        fail(known[0] if known else str(exc))
    except CellProcessError as exc:  # the cell's log is above: one line here
        fail(exc.headline, exc.returncode if exc.returncode in (runner.EXIT_USAGE,
                                                                runner.EXIT_FAILED) else 1)
    except KeyboardInterrupt:
        fail("interrupted; re-run the same command to resume (finished cells are kept)",
             EXIT_INTERRUPTED)
    print(f"results: {OUT.value}/results.md, {OUT.value}/results.csv")


def run() -> None:
    """Console-script entry point (one-line errors: common.cli.runner.run_main)."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
