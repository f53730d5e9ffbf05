"""Rebuild a lost or damaged checkpoint index from the states on disk.

Why: ``checkpoints/index.json`` is the only thing that names the slots. If it is
deleted, truncated by a full disk, or names a state folder that is gone, the states
themselves are usually intact, and each carries its own ``info.json`` (epoch, loss,
...) and, once evaluated, ``metrics.json``. Rather than start training over (which
would then delete every state as unreferenced), the slots are re-derived by the same
rules the loop applies:

* ``last``: the state of the highest epoch (an interrupted save's complete state
  counts: the loop would have named it next);
* ``best_loss``: the lowest mean train loss (ties: the earlier epoch, as the loop's
  strict ``<``);
* ``best_map``: the highest evaluated mAP (ties: the earlier evaluation); left empty
  when no state records an evaluation, and set again by the next evaluation.

A state is intact when its ``info.json`` reads, its checkpoint index and data
files open and every tensor reads back (TensorFlow checks each tensor's CRC).
Nothing is deleted here: states no slot takes and damaged states are listed under
``keep`` in the rebuilt index, so the store's clean-up leaves them for the user, and
a damaged old index is kept beside the new one as ``index.json.damaged-<time>``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from common.io import json_files
from common.runs.checkpoints.layout import STATE_METRICS, tf_readable_prefix



@dataclass
class StateCheck:
    """What :func:`check_state` found in one state folder."""

    name: str
    record: dict[str, Any] | None
    problem: str | None

    @property
    def intact(self) -> bool:
        return self.problem is None


def _read_json(path: str) -> Any:
    return json_files.load(path)


def check_state(directory: str, name: str, prefix: str, info: str, deep: bool = True
                ) -> StateCheck:
    """Check one state folder; ``deep`` also reads every tensor back (CRC-checked).

    Returns:
        The folder's record (its ``info.json`` plus ``metrics`` from ``metrics.json``
        when present) and, when it is not usable, the reason in words.
    """
    folder = os.path.join(directory, name)
    try:
        record = _read_json(os.path.join(folder, info))
    except (OSError, ValueError) as exc:
        return StateCheck(name, None, f"{info} unreadable ({exc})")
    if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
        return StateCheck(name, None, f"{info} has no epoch")
    record["dir"] = name
    metrics_path = os.path.join(folder, STATE_METRICS)
    if os.path.exists(metrics_path):
        try:
            record["metrics"] = _read_json(metrics_path)
        except (OSError, ValueError):
            pass  # an evaluation is cheap to redo; the state itself is fine
    if not os.path.exists(os.path.join(folder, prefix + ".index")):
        return StateCheck(name, record, "checkpoint index file missing")
    if deep:
        problem = read_all_tensors(os.path.join(folder, prefix))
        if problem:
            return StateCheck(name, record, problem)
    return StateCheck(name, record, None)


def read_all_tensors(prefix: str) -> str | None:
    """Read every tensor of a checkpoint; the reason it is unusable, or None."""
    try:
        with tf_readable_prefix(prefix) as readable:
            reader = tf.train.load_checkpoint(readable)
            for key in reader.get_variable_to_shape_map():
                value = reader.get_tensor(key)
                if isinstance(value, np.ndarray) and value.dtype.kind == "f" and \
                        not np.all(np.isfinite(value)):
                    return f"non-finite values in {key}"
    except (tf.errors.OpError, ValueError, IndexError) as exc:
        return f"unreadable ({str(exc).splitlines()[0][:200]})"
    return None


def _by_loss(record: dict[str, Any]) -> tuple[float, int]:
    loss = record.get("loss")
    loss = float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else math.inf
    return loss, record["epoch"]


def _by_map(record: dict[str, Any]) -> tuple[float, float]:
    metrics = record.get("metrics") or {}
    return -float(metrics.get("map", -math.inf)), float(metrics.get("evaluated_at_epoch", 0))


def rebuild_index(directory: str, prefix: str, info: str, version: int,
                  prefixes: tuple[str, ...] = ("e",)) -> dict[str, Any]:
    """A new index naming the intact states of ``directory`` by the loop's rules."""
    names = sorted(e for e in os.listdir(directory)
                   if e.startswith(prefixes) and os.path.isdir(os.path.join(directory, e)))
    checks = [check_state(directory, n, prefix, info) for n in names]
    intact = [c.record for c in checks if c.intact and c.record is not None]
    slots: dict[str, dict[str, Any]] = {}
    if intact:
        slots["last"] = max(intact, key=lambda r: (r["epoch"], r.get("saved_at", 0.0)))
        slots["best_loss"] = min(intact, key=_by_loss)
        evaluated = [r for r in intact if "map" in (r.get("metrics") or {})]
        if evaluated:
            slots["best_map"] = min(evaluated, key=_by_map)
    named = {r["dir"] for r in slots.values()}
    keep = sorted(n for n in names if n not in named)
    for check in checks:
        if not check.intact:
            logging.warning("checkpoint state %s is damaged (%s); kept, not used",
                            os.path.join(directory, check.name), check.problem)
    index = {"version": version, "slots": slots, "keep": keep,
             "rebuilt_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    logging.warning("rebuilt %s from %d intact state(s): %s%s",
                    os.path.join(directory, "index.json"), len(intact),
                    ", ".join(f"{s} = epoch {r['epoch']}" for s, r in slots.items())
                    or "no slot", f"; kept unnamed: {', '.join(keep)}" if keep else "")
    return index
