"""What a GAN run folder holds, and how to read it back without training code.

Layout of ``--model_dir``::

    config.json            kind "dfh_gan", the settings, the data's description
    checkpoints/           tf.train.CheckpointManager: ckpt-<epoch>.{index,data-*}, checkpoint
    checkpoints/pending_history.json   the history line of the epoch being saved
    history.jsonl          one JSON line per finished epoch
    samples.png            real training faces, each followed by generated variants
    identity_report.json   the independent evaluator's figures (identity_check.py)

Why a module of its own: ``augment`` must check a ``--gan_dir`` (is it a GAN run? does
it hold a checkpoint?) before TensorFlow loads, and rebuild only the generator.
"""

from __future__ import annotations

from common.errors import ProjectError
import os
from typing import Any

from common.runs.history import read_history_lines
from common.runs.run_config import RunConfigError, read_config_file

RUN_KIND = "dfh_gan"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_DIR = "checkpoints"
PENDING_HISTORY = "pending_history.json"
SAMPLES_FILE = "samples.png"
REPORT_FILE = "identity_report.json"


class GanRunError(ProjectError, ValueError):
    """A folder is not a usable GAN run (missing, foreign, damaged or mismatched)."""


def read_run_config(model_dir: str) -> dict[str, Any]:
    """``config.json`` of a GAN run.

    Raises:
        GanRunError: the folder or the file is missing, unreadable, or not a GAN run's.
    """
    if not os.path.isdir(model_dir):
        raise GanRunError(f"{model_dir}: no such folder")
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise GanRunError(f"{model_dir}: not a GAN run (no {CONFIG_FILE}; train one with "
                          "python -m dfh_tf.gan.train --model_dir ...)")
    try:  # the project's one run-config reader: damaged or too deep, one message
        config = read_config_file(path)
    except RunConfigError as exc:
        raise GanRunError(str(exc)) from None
    if config.get("kind") != RUN_KIND:
        raise GanRunError(f"{path}: not a GAN run's config (kind is not {RUN_KIND!r}); "
                          "is this another method's run folder?")
    return config


def latest_checkpoint_prefix(model_dir: str) -> str | None:
    """The newest complete checkpoint's prefix (``.../ckpt-N``), or None.

    Reads the ``checkpoint`` state file that tf.train.CheckpointManager replaces
    atomically after each complete save, without importing TensorFlow.
    """
    folder = os.path.join(model_dir, CHECKPOINT_DIR)
    state = os.path.join(folder, "checkpoint")
    if not os.path.exists(state):
        return None
    with open(state, encoding="utf-8") as f:
        for line in f:
            if line.startswith("model_checkpoint_path:"):
                name = line.split(":", 1)[1].strip().strip('"')
                prefix = name if os.path.isabs(name) else os.path.join(folder, name)
                return prefix if os.path.exists(prefix + ".index") else None
    return None


def check_gan_run(model_dir: str) -> dict[str, Any]:
    """The run config of a GAN run that holds a checkpoint (else GanRunError)."""
    config = read_run_config(model_dir)
    if latest_checkpoint_prefix(model_dir) is None:
        raise GanRunError(f"{model_dir}: a GAN run without a checkpoint (train at least "
                          "one epoch first)")
    return config


def read_history(model_dir: str) -> list[dict[str, Any]]:
    """The per-epoch lines of ``history.jsonl``, one per epoch (the latest line wins;
    torn lines from a killed write are skipped)."""
    return read_history_lines(model_dir, HISTORY_FILE)


def load_generator(model_dir: str):
    """The generator of a GAN run, its latest checkpoint restored (imports TensorFlow).

    Returns:
        ``(generator keras.Model, run config dict)``.
    """
    import tensorflow as tf

    from dfh_tf.gan.networks import build_generator

    config = check_gan_run(model_dir)
    settings = config["settings"]
    generator = build_generator(settings["noise_dim"], settings["width"])
    prefix = latest_checkpoint_prefix(model_dir)
    try:
        tf.train.Checkpoint(generator=generator).restore(prefix).expect_partial() \
            .assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as exc:
        quiet_unrestored_warnings()
        raise GanRunError(f"{prefix}: cannot restore the generator; a run of another "
                          "version of dfh_tf/gan/networks.py, or damaged files "
                          f"({str(exc).splitlines()[0][:300]})") from None
    return generator, config


def quiet_unrestored_warnings() -> None:
    """Silence TensorFlow's page of "value in checkpoint could not be found" warnings.

    A failed restore is reported as one error line; TensorFlow would add one warning
    per unrestored variable when the half-restored checkpoint object is collected.
    """
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
