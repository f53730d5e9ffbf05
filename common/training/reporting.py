"""What a run tells: the epoch's line, its history record, TensorBoard scalars, metrics.json.

Why a module of its own: the loop decides; this module only says. Keeping every record's
shape here (the history line, the checkpoint record, the report) means the loop's ``run``
fits on a screen and every reader finds one definition of each file's content.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

from common.metrics import METRIC_KEYS
from common.runs.history import HISTORY, append_history_line, read_history_lines
from common.training.epoch import EpochStats
from common.training.selection import REPORTED_SLOTS

METRICS = "metrics.json"
TENSORBOARD = "tensorboard"

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR).SerializeToString()


def write_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar, written without the ``tensorboard`` package.

    ``tf.summary.scalar`` needs that package at run time; this writes the same
    record (a float32 scalar tagged for the "scalars" plugin) with the core op.
    """
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


def write_scalars(writer, step: int, values: dict[str, float]) -> None:
    """Several scalars at ``step`` into ``writer``, flushed."""
    with writer.as_default():
        for tag, value in values.items():
            write_scalar(tag, value, step)
    writer.flush()


def epoch_scalars(stats: EpochStats, test: EpochStats, images_per_second: float) -> dict:
    """The TensorBoard scalars of an epoch."""
    scalars = {"train/loss": stats.loss, "train/accuracy": stats.accuracy,
               "test/loss": test.loss, "test/accuracy": test.accuracy,
               "perf/images_per_second": images_per_second}
    scalars.update({f"train/{k}": v for k, v in stats.parts.items()})
    scalars.update({f"test/{k}": v for k, v in test.parts.items()})
    return scalars


def retrieval_scalars(slot: str, metrics: dict[str, Any]) -> dict[str, float]:
    return {f"retrieval_{slot}/{k}": metrics[k] for k in METRIC_KEYS}


def history_line(epoch: int, stats: EpochStats, test: EpochStats, improved: bool,
                 learning_rate: float, staged: dict[str, Any]) -> dict[str, Any]:
    """The epoch's line of ``history.jsonl``."""
    return {"epoch": epoch, "loss": stats.loss, "loss_parts": stats.parts,
            "accuracy": stats.accuracy, "test_loss": test.loss, "test_accuracy": test.accuracy,
            "test_loss_parts": test.parts, "seconds": stats.seconds,
            "images_per_second": stats.images / max(stats.seconds, 1e-9),
            "best_loss": improved, "learning_rate": learning_rate, **staged}


def state_record(history: dict[str, Any], train_seconds: float, train_images: int,
                 optimizer_iterations: int) -> dict[str, Any]:
    """What a saved state's record holds (its history line too: a kill between the save and
    the history append loses nothing, :func:`restore_history_line`)."""
    keys = ("epoch", "loss", "loss_parts", "accuracy", "test_loss", "test_accuracy")
    return {**{k: history[k] for k in keys}, "train_seconds": train_seconds,
            "train_images": train_images, "optimizer_iterations": optimizer_iterations,
            "history": history, **({"stage": history["stage"]} if "stage" in history else {})}


def epoch_line(epoch: int, epochs: int, stats: EpochStats, test: EpochStats, seconds: float,
               improved: bool) -> str:
    """The line a person reads after each epoch."""
    parts = ", ".join(f"{k} {v:.4f}" for k, v in stats.parts.items())
    images_per_second = stats.images / max(stats.seconds, 1e-9)
    return (f"epoch {epoch}/{epochs} | train loss {stats.loss:.4f} ({parts}) acc "
            f"{stats.accuracy:.4f} | test loss {test.loss:.4f} acc {test.accuracy:.4f} | "
            f"{seconds:.1f} s, {images_per_second:.0f} img/s"
            + (" | new lowest loss" if improved else ""))


def restore_history_line(model_dir: str, record: dict[str, Any]) -> bool:
    """Append the ``last`` state's history line if a kill lost it; True when appended.

    The line is saved inside the state's record before it is appended to
    ``history.jsonl``, so a kill between the two loses nothing.
    """
    entry = record.get("history")
    if not entry or any(h["epoch"] == entry["epoch"] for h in read_history(model_dir)):
        return False
    append_history_line(model_dir, entry)
    logging.info("history.jsonl: restored the line of epoch %d from its checkpoint",
                 entry["epoch"])
    return True


def read_history(model_dir: str) -> list[dict[str, Any]]:
    """Per-epoch records of a run, one per epoch (the latest line wins; torn lines skipped)."""
    return read_history_lines(model_dir, HISTORY)


@dataclasses.dataclass
class Totals:
    """Training time and images: the whole run's (carried across resumes) and this call's."""

    train_seconds: float = 0.0
    train_images: int = 0
    session_seconds: float = 0.0
    session_images: int = 0

    def add(self, stats: EpochStats) -> None:
        self.train_seconds += stats.seconds
        self.train_images += stats.images
        self.session_seconds += stats.seconds
        self.session_images += stats.images


def report(store, data, config, method_config: dict[str, Any], policy: str,
           epochs_completed: int, totals: Totals, wall_seconds: float) -> dict[str, Any]:
    """The content of ``metrics.json``: each reported slot's epoch and test figures (and
    its validation figures, when states were chosen on a validation split), the protocol,
    the settings, times and throughput."""
    entries = {}
    validation = data.has_validation
    for slot in REPORTED_SLOTS:
        record = store.info(slot)
        metrics = record["test_metrics" if validation else "metrics"]
        entries[slot] = {"epoch": record["epoch"], "loss": record["loss"],
                         "test_accuracy": record.get("test_accuracy"),
                         **{k: metrics[k] for k in METRIC_KEYS}, **config.eval_settings()}
        if validation:
            entries[slot]["validation"] = {k: record["metrics"][k] for k in METRIC_KEYS}
    protocol = {"queries": "test split", "database": "train split",
                "relevant": "same label", **config.eval_settings()}
    if validation:
        protocol.update(database="train split without the validation rows",
                        selection="validation split",
                        validation=data.description.get("validation"))
    else:
        protocol["selection"] = "test split (no validation split)"
    return {
        **entries,
        "epochs_completed": epochs_completed,
        "protocol": protocol,
        "method": method_config,
        "dataset": data.description.get("dataset"),
        "num_classes": int(data.num_classes),
        "train_config": dataclasses.asdict(config),
        "precision_policy": policy,
        "wall_time_s": wall_seconds,
        "train_seconds_total": totals.train_seconds,
        "train_images_total": totals.train_images,
        "images_per_second": (totals.train_images / totals.train_seconds
                              if totals.train_seconds else None),
        "session_train_seconds": totals.session_seconds,
        "session_images_per_second": (totals.session_images / totals.session_seconds
                                      if totals.session_seconds else None),
    }
