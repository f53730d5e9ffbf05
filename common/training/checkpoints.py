"""Crash-safe checkpoint slots: ``last`` (resume), ``best_loss`` and ``best_map``.

Why not ``tf.train.CheckpointManager``: it rewrites its state file in place and keeps
one rolling series, while training needs named slots that a kill at any instant can
never leave half-written or pointing at a half-written state.

Layout under ``model_dir/checkpoints/``::

    index.json                  {"slots": {"last": {"dir": "e000003-1a2b3c4d", "epoch": 3, ...}}}
    e000003-1a2b3c4d/           one complete, immutable state
        ckpt.index, ckpt.data-*   tf.train.Checkpoint: model (incl. centers and batch-norm
                                  statistics), optimizer (incl. iterations), epoch counter
        info.json                 epoch, losses, ... at save time
    .tmp-*/                     a save in progress (or interrupted)

A save writes everything into a fresh ``.tmp-*`` folder, fsyncs the files and the
folder, renames it to its final name, then replaces ``index.json`` atomically
(write a temporary file, fsync, ``os.replace``, fsync the folder). Until that last
step the old index, and every state it names, is untouched. Several slots may
name the same state folder (``last`` and ``best_loss`` usually do); a folder no slot
names any more is deleted after the index switches. Opening the store removes
stale ``.tmp-*`` folders and unreferenced states left by a killed process.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Iterable, Iterator

import tensorflow as tf
from absl import logging

CHECKPOINT_DIR = "checkpoints"
INDEX = "index.json"
PREFIX = "ckpt"
INFO = "info.json"
SLOTS = ("last", "best_loss", "best_map")
_TMP = ".tmp-"
_INDEX_VERSION = 1
_JSON_TMP_SUFFIX = ".json-tmp"


class CheckpointError(RuntimeError):
    """A checkpoint slot is missing or its files cannot be read."""


class RunLockedError(RuntimeError):
    """Another process is training into the same ``model_dir``."""


def _fsync_path(path: str) -> None:
    """fsync a file or a folder (folders: best effort, not every OS allows it)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON to ``path`` so that readers see the old or the new file, never a part."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=_JSON_TMP_SUFFIX,
                               dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_path(folder)


def remove_stale_json_temps(folder: str) -> None:
    """Delete temporary files a killed :func:`write_json_atomic` left in ``folder``."""
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if entry.startswith(".") and entry.endswith(_JSON_TMP_SUFFIX) and os.path.isfile(path):
            with contextlib.suppress(OSError):
                os.remove(path)


def read_index(model_dir: str) -> dict[str, Any]:
    """The slot index of ``model_dir`` (empty slots when there is none)."""
    path = os.path.join(model_dir, CHECKPOINT_DIR, INDEX)
    if not os.path.exists(path):
        return {"version": _INDEX_VERSION, "slots": {}}
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    index.setdefault("slots", {})
    return index


class CheckpointStore:
    """Named, atomically replaced checkpoints of a set of trackable objects.

    Args:
        model_dir: the run folder; states live in ``model_dir/checkpoints``.
        **trackables: what a state holds, e.g. ``model=model, optimizer=optimizer,
            epoch=epoch_variable``. Build the optimizer's variables
            (``optimizer.build(model.trainable_variables)``) before :meth:`restore`,
            or Keras 3 would defer restoring them until they are created.

    Example:
        >>> store = CheckpointStore(run_dir, model=model, optimizer=opt, epoch=epoch_var)
        >>> store.save(["last", "best_loss"], {"epoch": 3, "loss": 1.25})
        >>> store.restore("last")["epoch"]
        3
    """

    def __init__(self, model_dir: str, **trackables: Any):
        self.model_dir = os.fspath(model_dir)
        self.directory = os.path.join(self.model_dir, CHECKPOINT_DIR)
        os.makedirs(self.directory, exist_ok=True)
        self._checkpoint = tf.train.Checkpoint(**trackables) if trackables else None
        self._trackables = trackables
        self.clean()

    # ----------------------------------------------------------------- reading
    def index(self) -> dict[str, Any]:
        """A copy of the current index."""
        return read_index(self.model_dir)

    def info(self, slot: str) -> dict[str, Any] | None:
        """The slot's record (``dir``, ``epoch``, ... and ``metrics`` once evaluated), or None."""
        return self.index()["slots"].get(slot)

    def has(self, slot: str) -> bool:
        return self.info(slot) is not None

    def prefix(self, slot: str) -> str:
        """The ``tf.train.Checkpoint`` file prefix of the slot's state."""
        info = self.info(slot)
        if info is None:
            raise CheckpointError(f"{self.directory}: no checkpoint in slot {slot!r}")
        return os.path.join(self.directory, info["dir"], PREFIX)

    # ----------------------------------------------------------------- writing
    def save(self, slots: Iterable[str], info: dict[str, Any]) -> dict[str, Any]:
        """Write the current state once and point every slot in ``slots`` at it.

        Args:
            slots: slot names (e.g. ``["last", "best_loss"]``).
            info: JSON-able facts about the state (epoch, loss, ...); stored in the
                state's ``info.json`` and in each slot's record.

        Returns:
            The slot record written (``info`` plus ``dir``).
        """
        slots = list(slots)
        if not slots:
            raise ValueError("save needs at least one slot")
        if self._checkpoint is None:
            raise ValueError("this store was opened without trackables; it cannot save")
        name = f"e{int(info.get('epoch', 0)):06d}-{uuid.uuid4().hex[:8]}"
        tmp = tempfile.mkdtemp(prefix=_TMP, dir=self.directory)
        try:
            self._checkpoint.write(os.path.join(tmp, PREFIX))
            record = dict(info, dir=name, saved_at=time.time())
            with open(os.path.join(tmp, INFO), "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2, sort_keys=True)
            for entry in os.listdir(tmp):
                _fsync_path(os.path.join(tmp, entry))
            _fsync_path(tmp)
            os.replace(tmp, os.path.join(self.directory, name))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_path(self.directory)
        self._update({slot: record for slot in slots})
        return record

    def point(self, slot: str, source: str, **fields: Any) -> dict[str, Any]:
        """Make ``slot`` name the state ``source`` names (no copy), updating its record."""
        record = self.info(source)
        if record is None:
            raise CheckpointError(f"{self.directory}: no checkpoint in slot {source!r}")
        record = dict(copy.deepcopy(record), **fields)
        self._update({slot: record})
        return record

    def update(self, slot: str, **fields: Any) -> dict[str, Any]:
        """Add or replace fields of a slot's record (e.g. its metrics)."""
        return self.point(slot, slot, **fields)

    def annotate_state(self, dir_name: str, **fields: Any) -> None:
        """Add fields (e.g. metrics) to every slot that names the state ``dir_name``."""
        index = self.index()
        records = {slot: dict(r, **fields) for slot, r in index["slots"].items()
                   if r["dir"] == dir_name}
        if records:
            self._update(records)

    def _update(self, records: dict[str, dict[str, Any]]) -> None:
        index = self.index()
        index["version"] = _INDEX_VERSION
        index["slots"].update(records)
        write_json_atomic(os.path.join(self.directory, INDEX), index)
        self._collect(index)

    # --------------------------------------------------------------- restoring
    def restore(self, slot: str) -> dict[str, Any]:
        """Restore every trackable from the slot; returns the slot's record.

        Every object of this store must find its values in the checkpoint
        (``assert_existing_objects_matched``): a checkpoint of another architecture
        fails loudly (CheckpointError) instead of silently leaving fresh weights.
        """
        if self._checkpoint is None:
            raise ValueError("this store was opened without trackables; it cannot restore")
        record = self.info(slot)
        if record is None:
            raise CheckpointError(f"{self.directory}: no checkpoint in slot {slot!r}")
        prefix = os.path.join(self.directory, record["dir"], PREFIX)
        try:
            self._checkpoint.read(prefix).assert_existing_objects_matched()
        except (AssertionError, ValueError) as exc:
            raise CheckpointError(f"{prefix}: the checkpoint does not match "
                                  f"({str(exc).splitlines()[0][:300]})") from None
        return record

    def restore_model(self, slot: str, model: Any) -> dict[str, Any]:
        """Restore only ``model``'s variables from the slot (the optimizer is left alone)."""
        record = self.info(slot)
        if record is None:
            raise CheckpointError(f"{self.directory}: no checkpoint in slot {slot!r}")
        _read_model(model, os.path.join(self.directory, record["dir"], PREFIX))
        return record

    # --------------------------------------------------------------- cleaning
    def clean(self) -> None:
        """Delete interrupted saves and states no slot names (left by a killed run)."""
        remove_stale_json_temps(self.directory)
        self._collect(self.index(), remove_tmp=True)

    def _collect(self, index: dict[str, Any], remove_tmp: bool = False) -> None:
        live = {r["dir"] for r in index["slots"].values()}
        for entry in os.listdir(self.directory):
            path = os.path.join(self.directory, entry)
            if not os.path.isdir(path) or entry in live:
                continue
            if entry.startswith(_TMP) and not remove_tmp:
                continue
            if entry.startswith(_TMP) or entry.startswith("e"):
                if remove_tmp:  # at start-up: left over by an interrupted run
                    logging.info("removing stale checkpoint folder %s", path)
                shutil.rmtree(path, ignore_errors=True)


def _read_model(model: Any, prefix: str) -> None:
    """Restore ``model`` only; a model of another architecture raises CheckpointError."""
    try:
        status = tf.train.Checkpoint(model=model).read(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as exc:
        raise CheckpointError(f"{prefix}: the checkpoint does not match this model "
                              f"({str(exc).splitlines()[0][:300]})") from None


def restore_model_weights(model: Any, model_dir: str, slot: str = "best_map") -> dict[str, Any]:
    """Load a slot's model variables into ``model`` (built like the trained one).

    For export and evaluation: the optimizer and epoch counter in the checkpoint are
    ignored (``expect_partial``). Retries when a concurrent training run replaced the
    slot between reading the index and reading the files.

    Returns:
        The slot's record (epoch, loss, metrics, ...).

    Raises:
        CheckpointError: the slot does not exist, or holds another architecture.
    """
    for attempt in range(3):
        record = read_index(model_dir)["slots"].get(slot)
        if record is None:
            raise CheckpointError(f"{os.path.join(model_dir, CHECKPOINT_DIR)}: "
                                  f"no checkpoint in slot {slot!r}")
        prefix = os.path.join(model_dir, CHECKPOINT_DIR, record["dir"], PREFIX)
        try:
            _read_model(model, prefix)
            return record
        except tf.errors.NotFoundError:
            if attempt == 2:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_lock(model_dir: str) -> Iterator[None]:
    """Hold an exclusive lock on ``model_dir`` so two runs never write one folder.

    Raises:
        RunLockedError: another process holds the lock.
    """
    os.makedirs(model_dir, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(os.path.join(model_dir, ".lock"), "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunLockedError(
                f"{model_dir}: another training run is using this folder") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
