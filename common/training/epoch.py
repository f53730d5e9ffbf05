"""One epoch: every step's values read back and summed, stopped at the first non-finite loss.

Why a module of its own: what an epoch reports (mean loss and parts, accuracy, images per
second) and when it must stop without saving (a NaN or inf loss, or a non-finite variable
after the last update) are the same for every method and every distribution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from common.errors import WorkFailedError
from common.io import interrupts
from common.models.finite import non_finite_variables


class NonFiniteLossError(WorkFailedError, FloatingPointError):
    """The training loss became NaN or infinite; nothing of that state was saved."""

    def __init__(self, message: str, epoch: int, step: int, last_good_epoch: int):
        super().__init__(message)
        self.epoch, self.step, self.last_good_epoch = epoch, step, last_good_epoch


class NonFiniteStateError(NonFiniteLossError):
    """An epoch ended with non-finite weights, statistics or centers; it was not saved."""


@dataclass
class EpochStats:
    """Means over an epoch's batches (each batch's cost, as minimised) and its accuracy."""

    loss: float
    parts: dict[str, float]
    accuracy: float
    images: int
    steps: int
    seconds: float


class _Sums:
    """The running float64 sums of a step's values: loss, each part, correct."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.values: np.ndarray | None = None
        self.images = self.steps = 0

    @staticmethod
    def row(values: dict[str, Any]) -> tuple[list[str], np.ndarray]:
        names = list(values["parts"])
        row = [values["loss"], *values["parts"].values(), values["correct"]]
        return names, np.array([np.float64(np.asarray(v)) for v in row])

    def add(self, names: list[str], row: np.ndarray, images: int) -> None:
        self.names = names
        self.values = row if self.values is None else self.values + row
        self.images += images
        self.steps += 1

    def stats(self, seconds: float) -> EpochStats:
        sums = self.values if self.values is not None else np.full(2, np.nan)  # no batch
        means = sums[:-1] / max(self.steps, 1)
        return EpochStats(loss=float(means[0]),
                          parts=dict(zip(self.names, map(float, means[1:]))),
                          accuracy=float(sums[-1] / max(self.images, 1)), images=self.images,
                          steps=self.steps, seconds=seconds)


def _kept(last_good_epoch: int, checkpoint_dir: str) -> str:
    return (f"the last good checkpoint (epoch {last_good_epoch}) is kept in {checkpoint_dir}"
            if last_good_epoch else "no epoch had completed, so there is no checkpoint")


def train_epoch(train_step: Callable, batches: Iterable, total: int, epoch_index: int,
                last_good_epoch: int, checkpoint_dir: str, progress=None) -> EpochStats:
    """Train one epoch of ``total`` steps; NonFiniteLossError at the first non-finite loss.

    A step's values are read back only after the next step is queued, so the device queue
    never drains.
    """
    sums = _Sums()
    start = time.perf_counter()
    pending = None

    def consume(step: int, values: dict[str, Any]) -> None:
        names, row = _Sums.row(values)
        if not np.all(np.isfinite(row[:-1])):
            parts = ", ".join(f"{k} {v:.4g}" for k, v in zip(names, row[1:-1]))
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {epoch_index + 1}, step {step + 1}/{total}"
                f": loss {row[0]:.4g} ({parts}). Training stopped without saving this "
                f"state; {_kept(last_good_epoch, checkpoint_dir)}. Check the loss weights or "
                "lower the learning rate.", epoch_index + 1, step + 1, last_good_epoch)
        sums.add(names, row, int(np.asarray(values["images"])))
        if progress is not None and sums.values is not None:  # always set by add()
            progress.update(sums.steps, loss=sums.values[0] / sums.steps, images=sums.images)

    for step, (batch_images, batch_labels) in enumerate(batches):
        if step >= total:
            break
        interrupts.check()  # a stop request ends the epoch here, before its state is saved
        values = train_step(batch_images, batch_labels)
        if pending is not None:
            consume(*pending)
        pending = (step, values)
    if pending is not None:
        consume(*pending)
    return sums.stats(time.perf_counter() - start)


def test_epoch(test_step: Callable, batches: Iterable) -> EpochStats:
    """Loss and accuracy of the live weights on the test split (inference mode)."""
    sums = _Sums()
    start = time.perf_counter()
    for batch_images, batch_labels in batches:
        interrupts.check()
        names, row = _Sums.row(test_step(batch_images, batch_labels))
        sums.add(names, row, int(batch_labels.shape[0]))
    return sums.stats(time.perf_counter() - start)


def check_outputs(test: EpochStats, codes, epoch: int, steps: int, last_good_epoch: int,
                  checkpoint_dir: str) -> None:
    """Refuse to save a state whose outputs are not finite (NonFiniteStateError).

    Finite weights can still be absurd (1e30 after a learning rate far too large): their
    outputs overflow, the test loss is NaN and every face gets the same code. A state is
    good only if its test loss and its relaxed codes of a probe batch are finite too.
    """
    bad = [name for name, value in (("test loss", test.loss), *test.parts.items())
           if not np.isfinite(value)]
    if codes is not None and not np.all(np.isfinite(np.asarray(codes))):
        bad.append("relaxed codes")
    if bad:
        raise NonFiniteStateError(
            f"after epoch {epoch} the model's outputs are not finite ({', '.join(bad[:5])}): "
            f"it diverged. Training stopped without saving this state; "
            f"{_kept(last_good_epoch, checkpoint_dir)}. Lower the learning rate or the loss "
            "weights.", epoch, steps, last_good_epoch)


def check_state(variables: list, epoch: int, steps: int, last_good_epoch: int,
                checkpoint_dir: str) -> None:
    """Refuse to save a state whose variables hold NaN or inf (NonFiniteStateError).

    The loss is finite at every step (checked in :func:`train_epoch`), yet the last update
    of an epoch, a batch-norm statistic or a center can still overflow; such a state is
    never saved, so never evaluated or exported.
    """
    bad = non_finite_variables(variables)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteStateError(
            f"non-finite values after epoch {epoch} in {shown}. Training stopped without "
            f"saving this state; {_kept(last_good_epoch, checkpoint_dir)}. Lower the learning "
            "rate or the loss weights.", epoch, steps, last_good_epoch)
