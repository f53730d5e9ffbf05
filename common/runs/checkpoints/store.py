"""Crash-safe checkpoint slots: ``last`` (resume), ``best_loss`` and ``best_map``.

Why not ``tf.train.CheckpointManager``: it rewrites its state file in place and keeps
one rolling series, while training needs named slots that a kill at any instant can
never leave half-written or pointing at a half-written state.

Layout under ``model_dir/checkpoints/``::

    index.json                  {"slots": {"last": {"dir": "e000003-1a2b3c4d", "epoch": 3, ...}}}
    e000003-1a2b3c4d/           one complete, immutable state
        ckpt.index, ckpt.data-*   tf.train.Checkpoint: model (incl. centers and batch-norm
                                  statistics), optimizer (incl. iterations), epoch counter
        info.json                 epoch, losses, the epoch's history line, ... at save time
        metrics.json              its retrieval figures, once evaluated
    .tmp-*/                     a save in progress (or interrupted)

A save writes everything into a fresh ``.tmp-*`` folder, fsyncs the files and the
folder, renames it to its final name, then replaces ``index.json`` atomically
(write a temporary file, fsync, ``os.replace``, fsync the folder). Until that last
step the old index, and every state it names, is untouched. Several slots may
name the same state folder (``last`` and ``best_loss`` usually do); a folder no slot
names any more is deleted after the index switches. Opening the store removes
stale ``.tmp-*`` folders and unreferenced states left by a killed process.

Only the index proves a state stale. When ``index.json`` is missing, unreadable or
names a state that is gone, it is rebuilt from the intact states
(:mod:`common.runs.checkpoints.recovery`), the damaged file kept aside, and every
state the rebuilt index does not name is kept (``keep``), never deleted. A state's
evaluation is also stored in its own ``metrics.json`` so that ``best_map`` survives
a rebuild. Files TensorFlow cannot read raise :class:`CheckpointError` ("damaged").
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import uuid
from typing import Any, Iterable

import tensorflow as tf
from absl import logging

from common.io.atomic import (fsync_path as _fsync_path, make_temp_dir,
                                 remove_stale_json_temps, write_json_atomic)
from common.io import json_files
from common.io.faults import crash_point
from common.runs.checkpoints.layout import (CHECKPOINT_DIR, INDEX, INDEX_VERSION, INFO, PREFIX,
                                            STATE, STATE_METRICS, TMP, UNREADABLE,
                                            CheckpointError, damaged, index_problem,
                                            state_folders, tf_readable_prefix)
from common.runs.checkpoints.recovery import rebuild_index

def read_index(model_dir: str, rebuild: bool = True) -> dict[str, Any]:
    """The slot index of ``model_dir`` (empty slots when there is no checkpoint at all).

    When ``index.json`` is missing, unreadable or names a state folder that is gone
    while states exist, the index is rebuilt in memory from the intact states
    (:mod:`common.runs.checkpoints.recovery`) and carries ``rebuilt_because``;
    :class:`CheckpointStore` then writes it. Nothing is deleted here. With
    ``rebuild=False`` (the store's own reads, after it has written a good index or
    found no state) a missing file means "no slot yet".
    """
    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    path = os.path.join(directory, INDEX)
    if not os.path.isdir(directory):
        return {"version": INDEX_VERSION, "slots": {}}
    problem = None
    if not os.path.exists(path):
        if not rebuild or not state_folders(directory):
            return {"version": INDEX_VERSION, "slots": {}}
        problem = f"{INDEX} is missing"
    else:
        try:
            index = json_files.load(path)
        except (OSError, ValueError) as exc:
            problem = f"{INDEX} is unreadable ({exc})"
        else:
            problem = index_problem(directory, index)
    if problem is None:
        index.setdefault("slots", {})
        return index
    if not rebuild:
        raise CheckpointError(f"{path}: {problem}")
    index = rebuild_index(directory, PREFIX, INFO, INDEX_VERSION, prefixes=(STATE,))
    index["rebuilt_because"] = problem
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
        self._write_rebuilt_index()
        self.clean()

    def _write_rebuilt_index(self) -> None:
        """Persist an index that :func:`read_index` had to rebuild; keep the damaged one."""
        index = read_index(self.model_dir)
        if "rebuilt_because" not in index:
            return
        path = os.path.join(self.directory, INDEX)
        if os.path.exists(path):
            aside = f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
            os.replace(path, aside)
            logging.warning("%s: %s; kept as %s", path, index["rebuilt_because"], aside)
        write_json_atomic(path, index)

    # ----------------------------------------------------------------- reading
    def index(self) -> dict[str, Any]:
        """A copy of the current index."""
        return read_index(self.model_dir, rebuild=False)

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
        tmp = make_temp_dir(TMP, self.directory)
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
        crash_point("checkpoint:renamed")
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
        """Add fields (e.g. metrics) to every slot that names the state ``dir_name``.

        ``metrics`` also go into the state folder's own ``metrics.json``, so that an
        index rebuilt after a loss still knows which state was evaluated best.
        """
        if "metrics" in fields:
            write_json_atomic(os.path.join(self.directory, dir_name, STATE_METRICS),
                              fields["metrics"])
        index = self.index()
        records = {slot: dict(r, **fields) for slot, r in index["slots"].items()
                   if r["dir"] == dir_name}
        if records:
            self._update(records)

    def _update(self, records: dict[str, dict[str, Any]]) -> None:
        index = self.index()
        index["version"] = INDEX_VERSION
        index["slots"].update(records)
        index.pop("rebuilt_because", None)
        write_json_atomic(os.path.join(self.directory, INDEX), index)
        crash_point("checkpoint:indexed")
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
            with tf_readable_prefix(prefix) as readable:
                self._checkpoint.read(readable).assert_existing_objects_matched()
        except (AssertionError, ValueError) as exc:
            raise CheckpointError(f"{prefix}: the checkpoint does not match "
                                  f"({str(exc).splitlines()[0][:300]})") from None
        except UNREADABLE as exc:
            raise damaged(prefix, exc) from None
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
        index = self.index()
        for record in index["slots"].values():
            remove_stale_json_temps(os.path.join(self.directory, record["dir"]))
        self._collect(index, remove_tmp=True)

    def _collect(self, index: dict[str, Any], remove_tmp: bool = False) -> None:
        """Delete what the index proves stale: states no slot names, interrupted saves.

        States listed under ``keep`` (found by an index rebuild but not chosen, or
        damaged) are never deleted: nothing proves them stale.
        """
        live = {r["dir"] for r in index["slots"].values()} | set(index.get("keep", []))
        for entry in os.listdir(self.directory):
            path = os.path.join(self.directory, entry)
            if not os.path.isdir(path) or entry in live:
                continue
            if entry.startswith(TMP) and not remove_tmp:
                continue
            if entry.startswith(TMP) or entry.startswith("e"):
                if remove_tmp:  # at start-up: left over by an interrupted run
                    logging.info("removing stale checkpoint folder %s", path)
                shutil.rmtree(path, ignore_errors=True)


class WorkerCheckpointStore(CheckpointStore):
    """The store of a multi-worker run's other workers: reads the chief's states, writes none.

    Why: the run folder is shared by every worker and the chief alone writes it (two
    writers of one index would race). A worker still resumes from the chief's ``last``
    state, so reading works as in :class:`CheckpointStore` (an index needing a rebuild
    is rebuilt in memory only). A save writes this worker's copy of the state into a
    private temporary folder, deleted at once: every worker takes part in writing a
    checkpoint, as TensorFlow asks of multi-worker programs (reading a distributed
    variable may need the other workers).
    """

    def __init__(self, model_dir: str, **trackables: Any):  # noqa: D107 (nothing written)
        self.model_dir = os.fspath(model_dir)
        self.directory = os.path.join(self.model_dir, CHECKPOINT_DIR)
        self._checkpoint = tf.train.Checkpoint(**trackables) if trackables else None
        self._trackables = trackables

    def index(self) -> dict[str, Any]:
        return read_index(self.model_dir)

    def save(self, slots: Iterable[str], info: dict[str, Any]) -> dict[str, Any]:
        import tempfile

        if self._checkpoint is None:
            raise ValueError("this store was opened without trackables; it cannot save")
        scratch = tempfile.mkdtemp(prefix="face-hashing-worker-ckpt-")
        try:
            self._checkpoint.write(os.path.join(scratch, PREFIX))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return dict(info, dir=None)

    def _update(self, records: dict[str, dict[str, Any]]) -> None:
        pass  # the chief's index alone names states

    def annotate_state(self, dir_name: str, **fields: Any) -> None:
        pass

    def clean(self) -> None:
        pass


def untracked_variables(model: Any) -> list[str]:
    """Paths of ``model``'s variables that a checkpoint of ``model`` alone would miss.

    TensorFlow's checkpoint graph follows a Keras layer's plain attributes, but not
    sublayers kept in a list or tuple attribute of a custom layer (Keras 3 tracks those
    for its own ``.variables``). A full training checkpoint still saves them through the
    optimizer, so a resume works, but a model-only restore (evaluation, export) would
    silently keep their initial values: training refuses such a model up front.
    """
    reachable = {id(obj) for obj in tf.train.TrackableView(model).descendants()}
    return [getattr(v, "path", v.name) for v in model.variables if id(v) not in reachable]


def _read_model(model: Any, prefix: str) -> None:
    """Restore ``model`` only; a model of another architecture raises CheckpointError."""
    try:
        with tf_readable_prefix(prefix) as readable:
            status = tf.train.Checkpoint(model=model).read(readable)
            status.expect_partial()
            status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as exc:
        raise CheckpointError(f"{prefix}: the checkpoint does not match this model "
                              f"({str(exc).splitlines()[0][:300]})") from None
    except tf.errors.NotFoundError:
        raise
    except UNREADABLE as exc:
        raise damaged(prefix, exc) from None


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
        except tf.errors.NotFoundError as exc:
            if attempt == 2:
                raise damaged(prefix, exc) from None
            time.sleep(0.2)
    raise AssertionError("unreachable")


