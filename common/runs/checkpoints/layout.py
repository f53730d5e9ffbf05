"""Where a run folder keeps its checkpoint states, and what makes a state readable.

The layout under ``model_dir/checkpoints/`` (common.runs.checkpoints.store writes it,
common.runs.checkpoints.recovery rebuilds its index)::

    index.json                  {"slots": {"last": {"dir": "e000003-1a2b3c4d", "epoch": 3, ...}}}
    e000003-1a2b3c4d/           one complete, immutable state
        ckpt.index, ckpt.data-*   tf.train.Checkpoint: model, optimizer(s), epoch counter
        info.json                 epoch, losses, the epoch's history line, ... at save time
        metrics.json              its retrieval figures, once evaluated
    .tmp-*/                     a save in progress (or interrupted)
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Iterator

import tensorflow as tf

from common.errors import ProjectError

CHECKPOINT_DIR = "checkpoints"
INDEX = "index.json"
PREFIX = "ckpt"
INFO = "info.json"
SLOTS = ("last", "best_loss", "best_map")
TMP = ".tmp-"
STATE = "e"  # state folders: e<epoch>-<random>
INDEX_VERSION = 1
# in a state folder: its evaluation (common.runs.checkpoints.recovery)
STATE_METRICS = "metrics.json"
# What TensorFlow raises for truncated or corrupt checkpoint files.
UNREADABLE = (tf.errors.OpError, IndexError)


_GLOB_CHARACTERS = frozenset("[]*?\\")


@contextlib.contextmanager
def tf_readable_prefix(prefix: str) -> Iterator[str]:
    """A path TensorFlow's checkpoint reader can open for ``prefix``.

    The reader treats a prefix as a file pattern, so a run folder named ``run[1]`` or
    ``a\\b`` is written fine but never found again. Such a state folder is read through
    a symbolic link with a plain name in a private temporary folder (removed after).
    """
    if not _GLOB_CHARACTERS.intersection(prefix):
        yield prefix
        return
    import tempfile

    link_dir = tempfile.mkdtemp(prefix="face-hashing-ckpt-")
    try:
        link = os.path.join(link_dir, "state")
        os.symlink(os.path.dirname(os.path.abspath(prefix)), link)
        yield os.path.join(link, os.path.basename(prefix))
    finally:
        shutil.rmtree(link_dir, ignore_errors=True)  # removes the link, not its target


class CheckpointError(ProjectError, RuntimeError):
    """A checkpoint slot is missing or its files cannot be read."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record: Any) -> str | None:
    """Why one slot's record cannot be trusted (a wrong type anywhere the loop reads), or
    None. A state folder is a plain name of this folder: never a path elsewhere."""
    if not isinstance(record, dict):
        return "is not an object"
    folder = record.get("dir")
    if not isinstance(folder, str) or not folder.startswith(STATE) or \
            os.path.basename(folder) != folder or folder in (".", ".."):
        return f"has no state folder of this index (dir {folder!r})"
    epoch = record.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return f"has no epoch (epoch {epoch!r})"
    if "loss" in record and not _number(record["loss"]):
        return f"has a loss that is not a number ({record['loss']!r})"
    for key in ("metrics", "test_metrics", "validation_metrics"):
        metrics = record.get(key)
        if metrics is not None and (not isinstance(metrics, dict)
                                    or not _number(metrics.get("map"))):
            return f"has damaged {key}"
    return None


def index_problem(directory: str, index: Any) -> str | None:
    """Why ``index`` cannot be trusted (malformed, of a wrong type, or naming a state that is
    gone), or None."""
    if not isinstance(index, dict) or not isinstance(index.get("slots", {}), dict):
        return "not an index object"
    keep = index.get("keep", [])
    if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
        return "its keep list is damaged"
    for slot, record in index.get("slots", {}).items():
        if slot not in SLOTS:
            return f"unknown slot {slot!r}"
        problem = record_problem(record)
        if problem:
            return f"slot {slot!r} {problem}"
        folder = os.path.join(directory, record["dir"])
        for name in (INFO, PREFIX + ".index"):
            if not os.path.exists(os.path.join(folder, name)):
                return f"slot {slot!r} names {record['dir']}, which has no {name}"
    return None


def state_folders(directory: str) -> list[str]:
    """The state folders (``e<epoch>-<random>``) under ``directory``."""
    return [e for e in os.listdir(directory)
            if e.startswith(STATE) and os.path.isdir(os.path.join(directory, e))]


def damaged(prefix: str, exc: Exception) -> CheckpointError:
    """The error for a checkpoint whose files TensorFlow cannot read (truncated, corrupt)."""
    return CheckpointError(f"{os.path.dirname(prefix)}: damaged checkpoint, its files cannot be "
                           f"read ({str(exc).splitlines()[0][:300]})")


