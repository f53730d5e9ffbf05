"""The command line every method's ``train`` module shares (absl flags + ``run_training``).

Why here: data set, loop, evaluation and precision flags are the same for every
method; a method's module only adds its own model flags and calls
:func:`run_training`. Bad input stops with one line on stderr (``error: ...``) and a
non-zero exit code, never a traceback: 2 for bad flags or data, 1 when training
itself fails (non-finite loss), 130 when interrupted.

Flags and data are checked before TensorFlow is imported, so mistakes are reported
in well under a second.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Callable, Union

from absl import flags

from common.cli import checks, runner
from common.cli.tf_startup import import_tensorflow
from common.data import DataFormatError
from common.cli.checks import check_no_arguments
from common.cli.runner import EXIT_FAILED, EXIT_INTERRUPTED, fail
from common.training.data import DATASETS, load_split_data

if TYPE_CHECKING:
    from common.methods.base import HashingMethod

DATASET = flags.DEFINE_enum(
    "dataset", "synthetic", DATASETS,
    "Data set: youtube_faces / facescrub (the original folders under --data_dir), folder "
    "(--train_dir and --test_dir), synthetic (generated into --data_dir on first use).")
DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Parent folder of the data set's split folders (default: data, or "
    "data/synthetic for --dataset synthetic).")
TRAIN_DIR = flags.DEFINE_string("train_dir", None, "Train split folder (overrides the default).")
TEST_DIR = flags.DEFINE_string("test_dir", None, "Test split folder (overrides the default).")
EXTRA_TRAIN_DIR = flags.DEFINE_string(
    "extra_train_dir", None, "A folder of further training rows (generated variants: python -m "
    "dfh_tf.gan.augment --variants_only): trained on beside the train split, but neither "
    "retrieval database items nor drawn into the validation split.")
SYNTHETIC_IDENTITIES = flags.DEFINE_integer(
    "synthetic_identities", None, "Synthetic set: identities (default 100).", lower_bound=2)
SYNTHETIC_TRAIN = flags.DEFINE_integer(
    "synthetic_train_per_identity", None, "Synthetic set: train images per identity (default 40).",
    lower_bound=1)
SYNTHETIC_TEST = flags.DEFINE_integer(
    "synthetic_test_per_identity", None, "Synthetic set: test images per identity (default 5).",
    lower_bound=1)
SYNTHETIC_SEED = flags.DEFINE_integer(
    "synthetic_seed", None, "Synthetic set: generator seed (default 0).", lower_bound=0)
VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction", 0.0, "Share of each identity's train images held out as a "
    "validation split (seeded by --validation_seed); best_map is then chosen on it and the "
    "test split is only scored. 0: no validation split, best_map is chosen on the test split "
    "as the original did. DDH's protocol: 0.1.", lower_bound=0.0, upper_bound=0.9)
VALIDATION_SEED = flags.DEFINE_integer(
    "validation_seed", 0, "Seed of the validation split's draw (independent of --seed, so "
    "runs of every seed hold out the same images).", lower_bound=0)

EPOCHS = flags.DEFINE_integer("epochs", 2000, "Total epochs (the original: 2000).", lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Batch size (the original: 256).",
                                  lower_bound=1)
LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
ADAM_EPSILON = flags.DEFINE_float("adam_epsilon", 1e-8, "Adam epsilon (TF1's default 1e-8).")
SPARSE_ADAM = flags.DEFINE_enum(
    "sparse_adam", "tf1", ["tf1", "keras"],
    "Adam on a sparse gradient with repeated rows (the centers'): tf1 sums the rows first, as "
    "the original's Adam did; keras is Keras 3's per-row second moment.")
SHUFFLE = flags.DEFINE_bool("shuffle", False,
                            "Reshuffle the train split every epoch (the original kept file order).")
SEED = flags.DEFINE_integer("seed", 0, "Random seed (weights, shuffles).", lower_bound=0)
MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Run folder (checkpoints, metrics.json, tensorboard/); re-running with "
    "the same folder resumes. Default: runs/<method>.")
EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", 100, "Evaluate retrieval of the lowest-loss checkpoint every N epochs "
    "(0: only at the end).", lower_bound=0)
HAMMING = flags.DEFINE_enum("hamming", "exact", ["exact", "legacy"],
                            "Hamming distance: exact, or the original evaluation's distorted one.")
TIES = flags.DEFINE_enum("ties", "index", ["index", "expected"],
                         "Equal distances ranked by database index, or the exact expectation "
                         "over a random order.")
TOP_K = flags.DEFINE_integer("top_k", 50, "Cut-off of precision@k.", lower_bound=1)
RADIUS = flags.DEFINE_integer("radius", 2, "Hamming radius of precision/recall.", lower_bound=0)
EVAL_BATCH_NORM = flags.DEFINE_enum(
    "eval_batch_norm", "moving", ["moving", "batch"],
    "Codes for evaluation: moving (inference mode, batch norm's moving statistics: what an "
    "export serves) or batch (each batch's own statistics, as the original DDAH evaluated).")
MIXED_PRECISION = flags.DEFINE_bool(
    "mixed_precision", False, "mixed_float16 with loss scaling on GPU, mixed_bfloat16 on CPU.")
JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")
DETERMINISTIC = flags.DEFINE_bool(
    "deterministic", False, "Deterministic TensorFlow ops: bit-exact reruns and resumes (slower).")
LOG_EVERY_STEPS = flags.DEFINE_integer(
    "log_every_steps", 100, "Progress inside an epoch: a bar redrawn in place on a terminal, "
    "else a line every N steps (0: neither).", lower_bound=0)
DISTRIBUTION = flags.DEFINE_enum(
    "distribution", "default", ["default", "mirrored", "multi_worker"],
    "default: one device; mirrored: one replica per local GPU (or per --cpu_devices CPU "
    "device); multi_worker: the workers the TF_CONFIG variable names, each with its GPUs. "
    "--batch_size is the global batch (README, 'Several GPUs', 'Several machines').")
CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None, "Split the CPU into N logical devices (to try --distribution "
    "mirrored without GPUs).", lower_bound=1, upper_bound=64)
MAX_STEPS_PER_EPOCH = flags.DEFINE_integer(
    "max_steps_per_epoch", None, "Cut every epoch short after N steps (smoke runs).",
    lower_bound=1)

flags.register_validator("learning_rate", lambda v: v > 0, message="--learning_rate must be > 0")
flags.register_validator("adam_epsilon", lambda v: v > 0, message="--adam_epsilon must be > 0")
for _name in ("learning_rate", "adam_epsilon"):
    checks.finite_flag(_name)
checks.bound_flag("epochs", checks.MAX_EPOCHS, "a run that long never ends")
checks.bound_flag("batch_size", checks.MAX_BATCH_SIZE, "a larger batch exhausts memory")
checks.bound_flag("top_k", checks.MAX_TOP_K, "more than any database this project handles")
checks.bound_flag("radius", checks.MAX_BITS, "codes are at most 1024 bits")
checks.bound_flag("seed", checks.MAX_SEED, "numpy's seed range")
checks.bound_flag("synthetic_seed", checks.MAX_SEED, "numpy's seed range")
checks.bound_flag("validation_seed", checks.MAX_SEED, "numpy's seed range")
checks.finite_flag("validation_fraction")
SYNTHETIC_DEFAULTS = {"synthetic_identities": 100, "synthetic_train_per_identity": 40,
                      "synthetic_test_per_identity": 5}  # the generator's defaults


@flags.multi_flags_validator(list(SYNTHETIC_DEFAULTS))
def _synthetic_set_fits(values: dict) -> bool:
    """Refuse a synthetic set too big for this machine before generating any of it."""
    counts = {k: v if v is not None else SYNTHETIC_DEFAULTS[k] for k, v in values.items()}
    images = counts["synthetic_identities"] * (counts["synthetic_train_per_identity"]
                                              + counts["synthetic_test_per_identity"])
    problem = checks.image_memory_error(images)
    if problem:
        raise flags.ValidationError(
            f"the synthetic set is too large: --synthetic_identities x "
            f"(--synthetic_train_per_identity + --synthetic_test_per_identity) = {problem}")
    return True


MethodOrFactory = Union["HashingMethod", Callable[[], "HashingMethod"]]

def synthetic_kwargs() -> dict[str, int]:
    """The synthetic-set flags the user gave (unset ones keep the generator's defaults)."""
    values = {"num_identities": SYNTHETIC_IDENTITIES.value,
              "train_per_identity": SYNTHETIC_TRAIN.value,
              "test_per_identity": SYNTHETIC_TEST.value, "seed": SYNTHETIC_SEED.value}
    return {k: v for k, v in values.items() if v is not None}


def load_data_from_flags():
    """Load the data set the flags name, or exit with one clear message."""
    if DATASET.value == "folder" and not (TRAIN_DIR.value and TEST_DIR.value):
        fail("--dataset folder needs both --train_dir and --test_dir")
    if DATASET.value != "synthetic" and synthetic_kwargs():
        fail("--synthetic_* flags only apply to --dataset synthetic")
    if DATASET.value == "folder" and DATA_DIR.present:  # would be silently ignored
        fail("--data_dir is not read with --dataset folder (it reads --train_dir and --test_dir)")
    if VALIDATION_FRACTION.value == 0.0 and VALIDATION_SEED.present:
        fail(checks.SEED_WITHOUT_FRACTION)
    try:
        return load_split_data(DATASET.value, DATA_DIR.value, TRAIN_DIR.value, TEST_DIR.value,
                               synthetic_kwargs=synthetic_kwargs(),
                               validation_fraction=VALIDATION_FRACTION.value,
                               validation_seed=VALIDATION_SEED.value,
                               extra_train_dir=EXTRA_TRAIN_DIR.value)
    except DataFormatError as exc:
        fail(f"bad data: {exc}")
    except (ValueError, OSError) as exc:
        fail(str(exc))


def _print_report(report: dict, model_dir: str) -> None:
    protocol = report["protocol"]
    validation = "validation" in report["best_map"]
    if validation:
        print(f"retrieval ({protocol['hamming']} Hamming, {protocol['ties']} ties; queries: test "
              f"split, database: train split without the validation rows; best_map chosen on "
              f"the validation split)")
    else:
        print(f"retrieval ({protocol['hamming']} Hamming, {protocol['ties']} ties; queries: test "
              f"split, database: train split)")
    radius = protocol["radius"]
    print(f"{'state':<10} {'epoch':>6} {'mAP':>8} {'P@' + str(protocol['top_k']):>8} "
          f"{f'P(r<={radius})':>9} {f'R(r<={radius})':>9}"
          + (f" {'val mAP':>8}" if validation else ""))
    for slot in ("last", "best_loss", "best_map"):
        r = report[slot]
        print(f"{slot:<10} {r['epoch']:>6} {r['map']:>8.4f} {r['precision_at_k']:>8.4f} "
              f"{r['precision_within_radius']:>9.4f} {r['recall_within_radius']:>9.4f}"
              + (f" {r['validation']['map']:>8.4f}" if validation else ""))
    print(f"metrics: {os.path.join(model_dir, 'metrics.json')}")


def _lost_worker(exc: BaseException) -> bool:
    """Whether ``exc`` is TensorFlow reporting that another worker is gone (its heartbeats
    stopped: the collectives are aborted with UnavailableError, measured 9 s after a kill)."""
    import tensorflow as tf

    return isinstance(exc, tf.errors.UnavailableError)


def run_training(method: MethodOrFactory) -> dict:
    """Train ``method`` as the shared flags say; returns the metrics report.

    Args:
        method: a :class:`common.methods.base.HashingMethod`, or a callable returning one
            (called after flags and data are checked, so that a bad flag is reported
            before the method's module pulls in TensorFlow).
    """
    # Before TensorFlow's first op: the CPU split, then a multi-worker strategy.
    if CPU_DEVICES.value or DISTRIBUTION.value == "multi_worker":
        from common.training.distribution import (DistributionError, configure_cpu_devices,
                                                  make_strategy)
        try:
            if CPU_DEVICES.value:
                configure_cpu_devices(CPU_DEVICES.value)
            if DISTRIBUTION.value == "multi_worker":
                make_strategy("multi_worker")  # train() gets this one back
        except DistributionError as exc:
            fail(str(exc))
    data = load_data_from_flags()
    import_tensorflow()  # once, its start-up notices filtered: TensorFlow from here on
    from common.methods.base import HashingMethod
    from common.io.locks import RunLockedError
    from common.runs.checkpoints.layout import CheckpointError
    from common.runs.run_config import RunConfigMismatchError
    from common.training.epoch import NonFiniteLossError
    from common.training.loop import TrainConfig, train

    try:
        if not isinstance(method, HashingMethod):
            method = method()
    except ValueError as exc:
        fail(str(exc))
    model_dir = MODEL_DIR.value or os.path.join("runs", method.name)
    config = TrainConfig(
        epochs=EPOCHS.value, model_dir=model_dir, batch_size=BATCH_SIZE.value,
        learning_rate=LEARNING_RATE.value, adam_epsilon=ADAM_EPSILON.value,
        sparse_adam=SPARSE_ADAM.value,
        shuffle=SHUFFLE.value, seed=SEED.value, eval_every=EVAL_EVERY.value,
        hamming=HAMMING.value, ties=TIES.value, top_k=TOP_K.value, radius=RADIUS.value,
        eval_batch_norm=EVAL_BATCH_NORM.value, mixed_precision=MIXED_PRECISION.value,
        jit_compile=JIT_COMPILE.value,
        deterministic=DETERMINISTIC.value, distribution=DISTRIBUTION.value,
        log_every_steps=LOG_EVERY_STEPS.value,
        max_steps_per_epoch=MAX_STEPS_PER_EPOCH.value)
    try:
        config.validate()
    except ValueError as exc:
        fail(str(exc))
    held = (f", {len(data.validation_labels)} held out for validation" if data.has_validation
            else "")
    if len(data.extra_train_labels):
        held += f", {len(data.extra_train_labels)} extra training rows"
    print(f"training {method.name} on {DATASET.value} ({data.num_classes} classes, "
          f"{len(data.train_labels)} train{held} / {len(data.test_labels)} test images) into "
          f"{model_dir}", flush=True)
    try:
        report = train(method, data, config)
    except RunConfigMismatchError as exc:
        fail(str(exc))
    except NonFiniteLossError as exc:
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        fail(f"interrupted; re-run with --model_dir {model_dir} to resume from the last "
             "completed epoch", EXIT_INTERRUPTED)
    except RunLockedError as exc:
        fail(str(exc))
    except CheckpointError as exc:
        fail(f"cannot resume from {model_dir}: {exc}")
    except ValueError as exc:  # DistributionError: e.g. workers that see different folders
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - only a lost worker is handled here
        if DISTRIBUTION.value != "multi_worker" or not _lost_worker(exc):
            raise
        fail(f"a worker of this multi_worker run stopped ({str(exc).splitlines()[0][:200]}); "
             f"start every worker again with the same command: they resume from the last epoch "
             f"saved in {model_dir}", EXIT_FAILED)
    if "worker" in report:  # a multi_worker run's other workers: the chief reports
        print(f"worker {report['worker']['type']} {report['worker'].get('index', 0)}: "
              f"trained to epoch {report['epochs_completed']}; the chief wrote the run to "
              f"{model_dir}")
        return report
    _print_report(report, model_dir)
    return report


def training_main(make_method: MethodOrFactory) -> Callable[[list[str]], None]:
    """The absl ``main`` of a method's train module."""
    def main(argv: list[str]) -> None:
        check_no_arguments(argv)
        for flag in (MODEL_DIR, DATA_DIR):  # before data and TensorFlow load
            checks.check_folder_flag(flag.name, flag.value)
        run_training(make_method)
    return main


def method_command(name: str, module: str) -> tuple[Callable[[list[str]], None],
                                                   Callable[[], None]]:
    """(main, run) of method ``name``'s train command, its flags defined now.

    The method's own flags come from its settings (common.cli.settings_flags); they and the
    shared flags above are the key flags of ``module`` (the calling module's ``__name__``),
    so ``--helpshort`` lists both, as absl lists a main module's own flags.
    """
    from common.cli.settings_flags import define_flags, settings_from_flags
    from common.methods import registry

    settings = registry.settings_class(name)
    holders = define_flags(settings)
    shown = sys.argv[0] if module == "__main__" else module  # absl's name of a main module
    for flag in [*flags.FLAGS.get_key_flags_for_module(__name__),
                 *(flags.FLAGS[holder.name] for holder in holders.values())]:
        flags.FLAGS.register_key_flag_for_module(shown, flag)

    def make_method():
        return registry.method_class(name)(settings_from_flags(settings, holders))

    main = training_main(make_method)
    return main, lambda: run_app(main)


def run_app(main: Callable[[list[str]], None]) -> None:
    """Parse the flags and run ``main`` with one-line errors (see common.cli.runner.run_main)."""
    runner.run_main(main)
