r"""Train the DFH-GANs augmentation GAN (DAGAN-style G, pair D, identity C).

    python -m dfh_tf.gan.train --dataset synthetic --data_dir /tmp/gan_synth_data \
        --epochs 12 --model_dir runs/dfh_gan
    python -m dfh_tf.gan.train --dataset facescrub --data_dir data --model_dir runs/gan_fs

--validation_fraction F (--validation_seed S) trains the GAN without the rows that a
hashing run with the same fraction and seed holds out as its validation split
(common.data.validation_split), so no validation face is seen by the GAN; config.json
records the split, the train folder and its rows' digest. Re-running with the same
--model_dir resumes after the last saved epoch (refused when --noise_dim, --width, the
data, the train folder, its rows or the validation split differ). At
the end (unless --noreport): samples.png and identity_report.json in --model_dir, made
from the rows the GAN trained on (and the test split, left whole). Design and numbers:
dfh_tf/gan/README.md.
"""

from __future__ import annotations

import os

from absl import flags

from common.cli import checks, runner
from common.cli.tf_startup import import_tensorflow
from common.data import DataFormatError
from common.cli.checks import check_no_arguments
from common.cli.runner import EXIT_FAILED, EXIT_INTERRUPTED, fail
from common.data.validation_split import DEFAULT_SEED as DEFAULT_VALIDATION_SEED
from dfh_tf.gan.data import DATASETS, load_gan_data
from dfh_tf.gan.run_folder import CONFIG_FILE, GanRunError, read_run_config

DATASET = flags.DEFINE_enum(
    "dataset", "synthetic", list(DATASETS),
    "synthetic (generated into --data_dir on first use), folder (--train_dir, optional "
    "--test_dir), youtube_faces / facescrub (the original folders under --data_dir).")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Parent folder of the split folders "
                               "(default: data, or data/synthetic for synthetic).")
TRAIN_DIR = flags.DEFINE_string("train_dir", None, "Train split folder (overrides the default).")
TEST_DIR = flags.DEFINE_string("test_dir", None, "Test split folder (only for the identity "
                               "check; default: the data set's, when present).")
VALIDATION_FRACTION = flags.DEFINE_float(
    "validation_fraction", 0.0, "Share of each identity's train images held out of the GAN's "
    "training (seeded by --validation_seed): the validation split a hashing run with the same "
    "--validation_fraction and --validation_seed holds out, so the GAN never sees it. 0: the "
    "GAN trains on the whole train split.", lower_bound=0.0, upper_bound=0.9)
VALIDATION_SEED = flags.DEFINE_integer(
    "validation_seed", DEFAULT_VALIDATION_SEED, "Seed of the validation split's draw (the "
    "hashing run's --validation_seed; independent of --seed).", lower_bound=0)
MODEL_DIR = flags.DEFINE_string("model_dir", os.path.join("runs", "dfh_gan"),
                                "Run folder; re-running with the same folder resumes.")
EPOCHS = flags.DEFINE_integer("epochs", 12, "Total epochs (12: the measured synthetic run).",
                             lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Source images per step.", lower_bound=1)
SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, order, partners and noise.",
                            lower_bound=0)
NOISE_DIM = flags.DEFINE_integer("noise_dim", 64, "Length of z.", lower_bound=1,
                                 upper_bound=4096)
WIDTH = flags.DEFINE_float("width", 1.0, "Channel multiplier of G, D and C.")
IDENTITY_WEIGHT = flags.DEFINE_float("identity_weight", 0.1, "Weight of C's cross-entropy on "
                                     "G's variants in G's loss.", lower_bound=0.0)
MODE_SEEKING_WEIGHT = flags.DEFINE_float("mode_seeking_weight", 0.1, "Weight of the "
                                         "mode-seeking term in G's loss.", lower_bound=0.0)
LEARNING_RATE = flags.DEFINE_float("learning_rate", 2e-4, "Adam's learning rate (G, D, C).")
MAX_STEPS_PER_EPOCH = flags.DEFINE_integer("max_steps_per_epoch", None,
                                           "Cut every epoch short (smoke runs).", lower_bound=1)
LOG_EVERY_STEPS = flags.DEFINE_integer("log_every_steps", 50, "A progress line every N steps "
                                       "when output is not a terminal (0: none).", lower_bound=0)
REPORT = flags.DEFINE_bool("report", True, "At the end: samples.png and the identity check "
                           "(--noreport skips both).")
EVALUATOR_EPOCHS = flags.DEFINE_integer("evaluator_epochs", 15, "Training epochs of the "
                                        "identity check's independent evaluator.",
                                        lower_bound=1)
flags.register_validator("width", lambda v: v > 0, message="--width must be > 0")
flags.register_validator("learning_rate", lambda v: v > 0, message="--learning_rate must be > 0")
for _name in ("width", "identity_weight", "mode_seeking_weight", "learning_rate"):
    checks.finite_flag(_name)
checks.bound_flag("width", checks.MAX_WIDTH_MULTIPLIER, checks.WHY_WIDTH)
checks.bound_flag("epochs", checks.MAX_EPOCHS, "a run that long never ends")
checks.bound_flag("evaluator_epochs", checks.MAX_EPOCHS, "a run that long never ends")
checks.bound_flag("batch_size", checks.MAX_BATCH_SIZE, "a larger batch exhausts memory")
checks.bound_flag("seed", checks.MAX_SEED, "numpy's seed range")
checks.bound_flag("validation_seed", checks.MAX_SEED, "numpy's seed range")
checks.finite_flag("validation_fraction")


def load_data():
    """The data the flags name, or one ``error:`` line (before TensorFlow loads)."""
    if VALIDATION_FRACTION.value == 0.0 and VALIDATION_SEED.present:
        fail(checks.SEED_WITHOUT_FRACTION)
    try:
        return load_gan_data(DATASET.value, DATA_DIR.value, TRAIN_DIR.value, TEST_DIR.value,
                             validation_fraction=VALIDATION_FRACTION.value,
                             validation_seed=VALIDATION_SEED.value)
    except DataFormatError as exc:
        fail(f"bad data: {exc}")
    except (ValueError, OSError) as exc:
        fail(str(exc))


def main(argv: list[str]) -> None:
    """Check flags and data, train (or resume), then write the report."""
    check_no_arguments(argv)
    for flag in (MODEL_DIR, DATA_DIR, TRAIN_DIR, TEST_DIR):
        checks.check_folder_flag(flag.name, flag.value)
    model_dir = MODEL_DIR.value
    if os.path.exists(os.path.join(model_dir, CONFIG_FILE)):
        try:
            read_run_config(model_dir)  # another method's folder: refused before any work
        except GanRunError as exc:
            fail(str(exc))
    data = load_data()
    from common.io.locks import RunLockedError
    import_tensorflow()  # once, its start-up notices filtered
    from dfh_tf.gan.trainer import GanConfig, GanNonFiniteError, train_gan

    config = GanConfig(
        epochs=EPOCHS.value, batch_size=BATCH_SIZE.value, seed=SEED.value,
        noise_dim=NOISE_DIM.value, width=WIDTH.value, identity_weight=IDENTITY_WEIGHT.value,
        mode_seeking_weight=MODE_SEEKING_WEIGHT.value, learning_rate=LEARNING_RATE.value,
        max_steps_per_epoch=MAX_STEPS_PER_EPOCH.value, log_every_steps=LOG_EVERY_STEPS.value)
    validation = data.description.get("validation")
    held = (f", {validation['images']} held out as the validation split (fraction "
            f"{validation['fraction']:g}, seed {validation['seed']})" if validation else "")
    print(f"training the GAN on {DATASET.value} ({data.description['train_identities']} "
          f"identities, {len(data.train_labels)} train / {data.description['test_images']} test "
          f"images{held}) into {model_dir}", flush=True)
    try:
        models, history = train_gan(data, config, model_dir)
    except GanRunError as exc:
        fail(str(exc))
    except RunLockedError as exc:
        fail(str(exc))
    except GanNonFiniteError as exc:
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        fail(f"interrupted; re-run with --model_dir {model_dir} to resume from the last "
             "completed epoch", EXIT_INTERRUPTED)
    if REPORT.value:
        from dfh_tf.gan.report import write_report

        write_report(models.generator, data, config.noise_dim, config.seed, model_dir,
                     EVALUATOR_EPOCHS.value, epochs_trained=history[-1]["epoch"] if history
                     else None)


def run() -> None:
    """Console-script entry point."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
