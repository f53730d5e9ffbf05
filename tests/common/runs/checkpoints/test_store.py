"""Checkpoint slots: optimizer state round-trips, saves are atomic, stale files are cleaned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.runs.checkpoints import store as checkpoints
from common.io.atomic import write_json_atomic
from common.io.locks import RunLockedError, run_lock
from common.runs.checkpoints.layout import CheckpointError
from common.runs.checkpoints.store import CheckpointStore, read_index, restore_model_weights


def _model(seed: int = 0, units: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, name="hidden")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(units, name="out")(x)
    return keras.Model(inputs, outputs)


def _state(seed: int = 0, units: int = 3):
    model = _model(seed, units)
    optimizer = keras.optimizers.Adam(1e-2, epsilon=1e-8)
    optimizer.build(model.trainable_variables)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    return model, optimizer, epoch


def _train(model, optimizer, steps: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = tf.constant(rng.normal(size=(8, 4)), tf.float32)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))


def _values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def test_model_and_optimizer_state_round_trip(tmp_path):
    model, optimizer, epoch = _state()
    _train(model, optimizer, steps=3)
    epoch.assign(3)
    store = CheckpointStore(str(tmp_path), model=model, optimizer=optimizer, epoch=epoch)
    store.save(["last"], {"epoch": 3, "loss": 0.5})

    model2, optimizer2, epoch2 = _state(seed=7)  # different initial weights, fresh moments
    assert int(optimizer2.iterations.numpy()) == 0
    record = CheckpointStore(str(tmp_path), model=model2, optimizer=optimizer2,
                             epoch=epoch2).restore("last")
    assert record["epoch"] == 3 and record["loss"] == 0.5
    # Restored at once (not deferred to the first step): iterations, every Adam moment,
    # every model variable (incl. batch-norm statistics) and the epoch counter.
    assert int(optimizer2.iterations.numpy()) == 3
    assert int(epoch2.numpy()) == 3
    moments = [v for v in optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    assert len(moments) == 2 * len(model.trainable_variables)
    assert any(np.any(v.numpy() != 0) for v in moments)
    for a, b in zip(_values(optimizer.variables), _values(optimizer2.variables)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_values(model.variables), _values(model2.variables)):
        np.testing.assert_array_equal(a, b)
    # ... and training continues identically.
    _train(model, optimizer, steps=2, seed=5)
    _train(model2, optimizer2, steps=2, seed=5)
    for a, b in zip(_values(model.variables), _values(model2.variables)):
        np.testing.assert_array_equal(a, b)


def test_slots_share_states_and_unused_states_are_deleted(tmp_path):
    model, optimizer, epoch = _state()
    store = CheckpointStore(str(tmp_path), model=model, optimizer=optimizer, epoch=epoch)
    first = store.save(["last", "best_loss"], {"epoch": 1, "loss": 2.0})
    assert store.info("last")["dir"] == store.info("best_loss")["dir"] == first["dir"]
    second = store.save(["last"], {"epoch": 2, "loss": 3.0})
    store.point("best_map", "best_loss", metrics={"map": 0.5})
    assert store.info("best_map")["dir"] == first["dir"]
    assert store.info("best_map")["metrics"] == {"map": 0.5}
    assert "metrics" not in store.info("best_loss")
    store.annotate_state(first["dir"], note="x")
    assert store.info("best_loss")["note"] == store.info("best_map")["note"] == "x"
    third = store.save(["last", "best_loss", "best_map"], {"epoch": 3, "loss": 1.0})
    folders = sorted(e for e in os.listdir(store.directory) if not e.endswith(".json"))
    assert folders == [third["dir"]]  # the epoch-1 and epoch-2 states are gone
    assert second["dir"] not in folders
    info = json.load(open(os.path.join(store.directory, third["dir"], "info.json")))
    assert info["epoch"] == 3 and info["loss"] == 1.0


@pytest.mark.parametrize("crash_point", ["checkpoint_write", "index_write"])
def test_crash_during_save_keeps_the_previous_state(tmp_path, monkeypatch, crash_point):
    model, optimizer, epoch = _state()
    store = CheckpointStore(str(tmp_path), model=model, optimizer=optimizer, epoch=epoch)
    _train(model, optimizer, steps=1)
    epoch.assign(1)
    store.save(["last"], {"epoch": 1, "loss": 1.0})
    good = _values(model.variables)
    _train(model, optimizer, steps=2)
    epoch.assign(2)

    # A killed process cleans nothing up: disable the in-process clean-up, then fail
    # half-way (after the checkpoint files are written / after the folder is renamed).
    monkeypatch.setattr(checkpoints.shutil, "rmtree", lambda *a, **k: None)
    if crash_point == "checkpoint_write":
        real_write = tf.train.Checkpoint.write

        def write_then_die(self, prefix, *args, **kwargs):
            real_write(self, prefix, *args, **kwargs)
            raise KeyboardInterrupt("killed")

        monkeypatch.setattr(tf.train.Checkpoint, "write", write_then_die)
    else:
        def die(path, obj):
            raise KeyboardInterrupt("killed")

        monkeypatch.setattr(checkpoints, "write_json_atomic", die)
    with pytest.raises(KeyboardInterrupt):
        store.save(["last"], {"epoch": 2, "loss": 0.5})
    monkeypatch.undo()
    leftovers = [e for e in os.listdir(store.directory) if e != "index.json"]
    assert len(leftovers) == 2  # the good state + the interrupted one

    model2, optimizer2, epoch2 = _state(seed=3)
    store2 = CheckpointStore(str(tmp_path), model=model2, optimizer=optimizer2, epoch=epoch2)
    assert [e for e in os.listdir(store2.directory) if e != "index.json"] == [
        store2.info("last")["dir"]]  # stale folder removed on open
    assert store2.restore("last")["epoch"] == 1
    assert int(epoch2.numpy()) == 1
    for a, b in zip(good, _values(model2.variables)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_killed_process_leaves_a_restorable_checkpoint(tmp_path):
    """SIGKILL a process that saves in a loop; the index must name a complete state."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import tensorflow as tf
        from {os.path.splitext(os.path.basename(__file__))[0]} import _state
        from common.runs.checkpoints.store import CheckpointStore
        model, optimizer, epoch = _state()
        store = CheckpointStore({str(tmp_path)!r}, model=model, optimizer=optimizer, epoch=epoch)
        for i in range(1, 100000):
            for v in model.trainable_variables:
                v.assign(tf.fill(v.shape, float(i)))
            epoch.assign(i)
            store.save(["last"] if i % 2 else ["last", "best_loss"], {{"epoch": i}})
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if int(line) >= 5:
                break
        time.sleep(0.137)  # somewhere inside a later save
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    model, optimizer, epoch = _state(seed=9)
    store = CheckpointStore(str(tmp_path), model=model, optimizer=optimizer, epoch=epoch)
    record = store.restore("last")
    i = record["epoch"]
    assert i >= 5 and int(epoch.numpy()) == i
    for v in model.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), np.full(v.shape, float(i), np.float32))
    assert not [e for e in os.listdir(store.directory) if e.startswith(".tmp-")]
    live = {r["dir"] for r in store.index()["slots"].values()}
    assert set(os.listdir(store.directory)) - {"index.json"} == live


def test_restore_model_weights_for_export(tmp_path):
    model, optimizer, epoch = _state()
    _train(model, optimizer, steps=2)
    store = CheckpointStore(str(tmp_path), model=model, optimizer=optimizer, epoch=epoch)
    store.save(["last", "best_map"], {"epoch": 2})
    fresh = _model(seed=11)
    record = restore_model_weights(fresh, str(tmp_path), "best_map")  # optimizer ignored
    assert record["epoch"] == 2
    for a, b in zip(_values(model.variables), _values(fresh.variables)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="best_loss"):
        restore_model_weights(fresh, str(tmp_path), "best_loss")
    with pytest.raises(CheckpointError, match="does not match"):  # never loads silently
        restore_model_weights(_model(units=4), str(tmp_path), "best_map")
    assert read_index(str(tmp_path / "nothing"))["slots"] == {}


def test_run_lock_refuses_a_second_run(tmp_path):
    with run_lock(str(tmp_path)):
        with pytest.raises(RunLockedError, match="another training run"):
            with run_lock(str(tmp_path)):
                pass
    with run_lock(str(tmp_path)):  # released
        pass


def test_write_json_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json_atomic(str(path), {"a": 1})

    def broken_dump(obj, f, **kwargs):
        f.write('{"a": ')
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.json, "dump", broken_dump)
    with pytest.raises(OSError):
        write_json_atomic(str(path), {"a": 2})
    monkeypatch.undo()
    assert json.load(open(path)) == {"a": 1}
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("store_class", [CheckpointStore, checkpoints.WorkerCheckpointStore])
def test_a_store_opened_without_trackables_refuses_to_save(tmp_path, store_class):
    """A store opened only to read (no model, no optimizer) says so on save, writing nothing."""
    store = store_class(str(tmp_path))
    with pytest.raises(ValueError, match="opened without trackables; it cannot save"):
        store.save(["last"], {"epoch": 1})
    assert not os.path.exists(tmp_path / "checkpoints") or not os.listdir(tmp_path / "checkpoints")


def test_a_save_whose_files_cannot_be_flushed_keeps_the_previous_state(tmp_path, monkeypatch):
    """An fsync error (EIO, a full disk) fails the save before the new state is published,
    so the previous state stays the slot's and its folder is not deleted."""
    import errno
    import stat

    model, optimizer, epoch = _state()
    store = CheckpointStore(str(tmp_path), model=model, optimizer=optimizer, epoch=epoch)
    epoch.assign(1)
    first = store.save(["last"], {"epoch": 1, "loss": 1.0})
    good = _values(model.variables)
    _train(model, optimizer, steps=2)
    epoch.assign(2)
    real_fsync = os.fsync

    def fsync(fd):
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        store.save(["last"], {"epoch": 2, "loss": 0.5})
    monkeypatch.undo()
    assert sorted(os.listdir(store.directory)) == sorted([first["dir"], "index.json"])
    model2, optimizer2, epoch2 = _state(seed=3)
    store2 = CheckpointStore(str(tmp_path), model=model2, optimizer=optimizer2, epoch=epoch2)
    assert store2.restore("last")["epoch"] == 1
    for a, b in zip(good, _values(model2.variables)):
        np.testing.assert_array_equal(a, b)
