"""Training never deletes what it cannot prove stale and never keeps a wrong result.

Each test is named after the promise it keeps (README, "Safety and errors").
"""

from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tiny_training import checkpoint_tensors, synthetic_split

from common.training.saved_run import RunFolderError, evaluate_run, export_run, load_run
from common.runs.checkpoints import store as checkpoints
from common.runs.checkpoints.layout import CheckpointError
from common.runs.history import append_history_line
from common.training import loop, selection
from common.runs.run_config import RUN_CONFIG, RunConfigMismatchError
from common.training.epoch import NonFiniteStateError
from common.training.loop import TrainConfig, _Trainer, train
from common.training.reporting import read_history
from dcbh_tf.method import DCBH

pytestmark = pytest.mark.slow  # trains models or starts processes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 identities x (6 train + 2 test): 3 steps of 16 per epoch."""
    return synthetic_split(tmp_path_factory.mktemp("rel") / "data", 8, 6, 2)


def _config(model_dir, epochs, **kwargs) -> TrainConfig:
    settings = dict(batch_size=16, eval_every=0, log_every_steps=0)
    settings.update(kwargs)
    return TrainConfig(epochs=epochs, model_dir=str(model_dir), **settings)


def _dcbh(**kwargs) -> DCBH:
    return DCBH(num_bits=12, code_length=3, width_multiplier=0.0625, **kwargs)


def _states(model_dir) -> dict[str, int]:
    """State folder -> total bytes of its files (what a deletion would lose)."""
    root = os.path.join(str(model_dir), "checkpoints")
    return {e: sum(os.path.getsize(f) for f in glob.glob(os.path.join(root, e, "*")))
            for e in os.listdir(root) if e.startswith("e")}


def _slots(model_dir) -> dict[str, tuple[str, int]]:
    index = checkpoints.read_index(str(model_dir))
    return {s: (r["dir"], r["epoch"]) for s, r in index["slots"].items()}


@pytest.fixture(scope="module")
def evaluated_run(data, tmp_path_factory):
    """4 epochs, evaluated every epoch: three slots on (usually) different states."""
    model_dir = tmp_path_factory.mktemp("evaluated") / "run"
    train(_dcbh(), data, _config(model_dir, 4, eval_every=1))
    return model_dir


# --------------------------------------------------------------------------- index loss
@pytest.mark.parametrize("damage", ["deleted", "truncated", "names_a_missing_state"])
def test_lost_index_is_rebuilt_from_the_intact_states_and_nothing_is_deleted(
        evaluated_run, data, tmp_path, damage):
    model_dir = tmp_path / "run"
    shutil.copytree(evaluated_run, model_dir)
    index_path = model_dir / "checkpoints" / "index.json"
    before_slots = _slots(model_dir)
    before_index = json.loads(index_path.read_text())
    states = _states(model_dir)
    if damage == "deleted":
        index_path.unlink()
    elif damage == "truncated":
        index_path.write_text(index_path.read_text()[:40])
    else:
        broken = dict(before_index)
        broken["slots"] = dict(broken["slots"], last=dict(broken["slots"]["last"],
                                                          dir="e000099-gone"))
        index_path.write_text(json.dumps(broken))

    # Reading (export, evaluate) sees the same slots, with their evaluations.
    rebuilt = checkpoints.read_index(str(model_dir))
    assert {s: (r["dir"], r["epoch"]) for s, r in rebuilt["slots"].items()} == before_slots
    assert rebuilt["slots"]["best_map"]["metrics"]["map"] == \
        before_index["slots"]["best_map"]["metrics"]["map"]

    # Training resumes from the last epoch (not epoch 1) and keeps every intact state.
    report = train(_dcbh(), data, _config(model_dir, 4, eval_every=1))
    assert report["epochs_completed"] == 4
    assert _states(model_dir) == states
    assert _slots(model_dir) == before_slots
    assert [h["epoch"] for h in read_history(str(model_dir))] == [1, 2, 3, 4]
    kept_aside = glob.glob(str(index_path) + ".damaged-*")
    assert len(kept_aside) == (0 if damage == "deleted" else 1)


def test_rebuilt_index_keeps_states_it_cannot_prove_stale(evaluated_run, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(evaluated_run, model_dir)
    root = model_dir / "checkpoints"
    last = checkpoints.read_index(str(model_dir))["slots"]["last"]["dir"]
    shutil.copytree(root / last, root / "e000002-00000000")  # a state no rule picks:
    info = json.loads((root / "e000002-00000000" / "info.json").read_text())
    info.update(epoch=2, loss=1e9)                               # older, worse, not evaluated
    (root / "e000002-00000000" / "info.json").write_text(json.dumps(info))
    (root / "e000001-damaged").mkdir()
    (root / "e000001-damaged" / "info.json").write_text('{"epoch": 1')
    (root / "index.json").unlink()
    store = checkpoints.CheckpointStore(str(model_dir))
    index = store.index()
    assert set(index["keep"]) == {"e000002-00000000", "e000001-damaged"}
    store.clean()
    assert (root / "e000002-00000000").is_dir() and (root / "e000001-damaged").is_dir()


# --------------------------------------------------------------------------- history
def test_no_history_line_is_lost_by_a_kill_between_checkpoint_and_history(
        data, tmp_path, monkeypatch):
    model_dir = tmp_path / "run"
    real_append = append_history_line

    def killed_before_epoch_2_line(path, entry):
        if entry["epoch"] == 2:
            raise KeyboardInterrupt("simulated kill")
        real_append(path, entry)

    monkeypatch.setattr(loop, "append_history_line", killed_before_epoch_2_line)
    with pytest.raises(KeyboardInterrupt):
        train(_dcbh(), data, _config(model_dir, 3))
    monkeypatch.undo()
    assert _slots(model_dir)["last"][1] == 2  # the state was saved, its line not written
    assert [h["epoch"] for h in read_history(str(model_dir))] == [1]
    train(_dcbh(), data, _config(model_dir, 3))
    history = read_history(str(model_dir))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    saved = checkpoints.read_index(str(model_dir))["slots"]["last"]["history"]
    assert history[2] == saved


# --------------------------------------------------------------------------- diverged state
class PoisonedStatistics(DCBH):
    """DCBH whose batch-norm moving means become NaN at one (0-based) global step.

    The training loss stays finite (training mode uses the batch's statistics), so
    only a check of the state itself can notice.
    """

    def __init__(self, poison_step: int, **kwargs):
        super().__init__(**kwargs)
        self.poison_step = poison_step

    def build_model(self, num_classes):
        model = super().build_model(num_classes)
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.targets = [v for v in model.non_trainable_variables if "moving_mean" in v.path]
        return model

    def before_optimizer_step(self, model, outputs, labels):
        super().before_optimizer_step(model, outputs, labels)
        poison = tf.equal(self.steps, self.poison_step)
        for variable in self.targets:
            variable.assign(tf.where(poison, tf.fill(tf.shape(variable), np.nan), variable))
        self.steps.assign_add(1)


def test_a_diverged_state_is_never_saved_as_good(data, tmp_path):
    model_dir = tmp_path / "run"
    method = PoisonedStatistics(5, num_bits=12, code_length=3, width_multiplier=0.0625)
    with pytest.raises(NonFiniteStateError, match="after epoch 2 in .*moving_mean") as info:
        train(method, data, _config(model_dir, 3))
    assert info.value.last_good_epoch == 1
    assert {epoch for _, epoch in _slots(model_dir).values()} == {1}
    for slot in ("last", "best_loss"):
        assert all(np.all(np.isfinite(t)) for t in checkpoint_tensors(model_dir, slot).values()
                   if t.dtype.kind == "f")


class BlownUp(DCBH):
    """DCBH whose weights are multiplied by 1e30 at one (0-based) global step: every weight
    stays finite, but the outputs overflow (the state a far too large learning rate
    leaves: its test loss NaN, every face the same code)."""

    def __init__(self, at_step: int, **kwargs):
        super().__init__(**kwargs)
        self.at_step, self.step = at_step, tf.Variable(0, trainable=False)

    def before_optimizer_step(self, model, outputs, labels):
        super().before_optimizer_step(model, outputs, labels)
        if_now = tf.equal(self.step, self.at_step)
        for v in model.trainable_variables:
            if "kernel" in v.path:
                v.assign(tf.where(if_now, v * 1e30, v))
        self.step.assign_add(1)


def test_a_state_with_finite_but_absurd_weights_is_never_saved(data, tmp_path):
    """The class of issue 27's first case: not a NaN weight but outputs that overflow."""
    model_dir = tmp_path / "run"
    method = BlownUp(5, num_bits=12, code_length=3, width_multiplier=0.0625)
    with pytest.raises(NonFiniteStateError, match="after epoch 2 the model's outputs are not "
                                                  "finite .*it diverged"):
        train(method, data, _config(model_dir, 3))
    assert {epoch for _, epoch in _slots(model_dir).values()} == {1}


def test_a_saved_state_whose_codes_overflow_is_neither_evaluated_nor_exported(evaluated_run,
                                                                             tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(evaluated_run, model_dir)
    run = load_run(DCBH, str(model_dir), "best_map")
    for v in run.model.trainable_variables:
        if "kernel" in v.path:
            v.assign(v * 1e30)
    record = checkpoints.read_index(str(model_dir))["slots"]["best_map"]
    tf.train.Checkpoint(model=run.model).write(
        str(model_dir / "checkpoints" / record["dir"] / "ckpt"))
    with pytest.raises(RunFolderError, match="non-finite values .*relaxed codes"):
        export_run(DCBH, str(model_dir), str(tmp_path / "export"))
    with pytest.raises(RunFolderError, match="non-finite"):
        evaluate_run(DCBH, str(model_dir))
    assert not (tmp_path / "export").exists()


def test_resuming_from_a_non_finite_last_state_is_refused(data, tmp_path):
    """Never trained on, and never called "the last good checkpoint" afterwards."""
    model_dir = tmp_path / "run"
    train(_dcbh(), data, _config(model_dir, 1))
    # the full training checkpoint of "last", rewritten with a NaN statistic
    trainer = _Trainer(_dcbh(), data, _config(model_dir, 2))
    trainer.store.restore("last")
    stat = [v for v in trainer.model.non_trainable_variables if "moving_variance" in v.path][0]
    stat.assign(tf.fill(tf.shape(stat), np.nan))
    state = _slots(model_dir)["last"][0]
    trainer.store._checkpoint.write(str(model_dir / "checkpoints" / state / "ckpt"))
    with pytest.raises(CheckpointError, match="holds non-finite values .*moving_variance.*cannot "
                                              "be resumed"):
        train(_dcbh(), data, _config(model_dir, 2))
    assert _slots(model_dir)["last"] == (state, 1)


@pytest.mark.parametrize("damage", ["unreadable", "non_finite"])
def test_a_refused_resume_leaves_run_config_json_as_it_was(data, tmp_path, damage):
    """The new settings (a learning rate, more epochs) are recorded only once the last state
    has been restored: a resume refused by its damaged state (unreadable files, found when
    restored; non-finite values, found after) records no setting change that never applied."""
    model_dir = tmp_path / "run"
    train(_dcbh(), data, _config(model_dir, 1, learning_rate=1e-3))
    state = _slots(model_dir)["last"][0]
    if damage == "unreadable":  # the checksum of the data file no longer matches
        data_file = glob.glob(str(model_dir / "checkpoints" / state / "ckpt.data-*"))[0]
        content = bytearray(open(data_file, "rb").read())
        content[len(content) // 2:len(content) // 2 + 16] = bytes(
            b ^ 0xFF for b in content[len(content) // 2:len(content) // 2 + 16])
        open(data_file, "wb").write(bytes(content))
        refusal = "damaged checkpoint"
    else:
        trainer = _Trainer(_dcbh(), data, _config(model_dir, 2))
        trainer.store.restore("last")
        kernel = trainer.model.trainable_variables[0]
        kernel.assign(tf.fill(tf.shape(kernel), np.inf))
        trainer.store._checkpoint.write(str(model_dir / "checkpoints" / state / "ckpt"))
        refusal = "holds non-finite values .*cannot be resumed"
    before = (model_dir / RUN_CONFIG).read_bytes()
    with pytest.raises(CheckpointError, match=refusal):
        train(_dcbh(), data, _config(model_dir, 3, learning_rate=2e-3))
    assert (model_dir / RUN_CONFIG).read_bytes() == before
    assert "setting_changes" not in json.loads(before)
    assert _slots(model_dir)["last"] == (state, 1)


# --------------------------------------------------------------------------- settings
def test_a_resumed_run_applies_a_changed_learning_rate(data, tmp_path):
    model_dir = tmp_path / "run"
    train(_dcbh(), data, _config(model_dir, 1, learning_rate=1e-3))
    lr_key = [k for k in checkpoint_tensors(model_dir, "last") if "learning_rate" in k]
    assert lr_key, "the optimizer's learning rate is part of the checkpoint"
    assert checkpoint_tensors(model_dir, "last")[lr_key[0]] == pytest.approx(1e-3)
    train(_dcbh(), data, _config(model_dir, 2, learning_rate=2.5e-4))
    assert checkpoint_tensors(model_dir, "last")[lr_key[0]] == pytest.approx(2.5e-4)
    run_config = json.loads((model_dir / RUN_CONFIG).read_text())
    assert run_config["train_config"]["learning_rate"] == 2.5e-4
    assert run_config["setting_changes"] == [
        {"from_epoch": 2, "changed": {"epochs": [1, 2], "learning_rate": [1e-3, 2.5e-4]}}]


def test_a_run_with_checkpoints_but_no_run_config_is_refused(data, tmp_path):
    model_dir = tmp_path / "run"
    train(_dcbh(), data, _config(model_dir, 1))
    (model_dir / RUN_CONFIG).unlink()
    states = _states(model_dir)
    with pytest.raises(RunConfigMismatchError, match="run_config.json: missing"):
        train(_dcbh(), data, _config(model_dir, 2))
    assert _states(model_dir) == states


# --------------------------------------------------------------------------- evaluation
def test_resume_redoes_an_evaluation_a_kill_interrupted(data, tmp_path, monkeypatch,
                                                        op_determinism):
    def config(model_dir):
        return _config(model_dir, 4, eval_every=2, deterministic=True, shuffle=True, seed=5)

    train(_dcbh(), data, config(tmp_path / "straight"))
    calls = []
    real = selection.evaluate_retrieval

    def killed_in_first_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt("simulated kill inside the epoch-2 evaluation")
        return real(*args, **kwargs)

    monkeypatch.setattr(selection, "evaluate_retrieval", killed_in_first_evaluation)
    with pytest.raises(KeyboardInterrupt):
        train(_dcbh(), data, config(tmp_path / "killed"))
    monkeypatch.undo()
    assert "best_map" not in checkpoints.read_index(str(tmp_path / "killed"))["slots"]
    train(_dcbh(), data, config(tmp_path / "killed"))

    straight = checkpoints.read_index(str(tmp_path / "straight"))["slots"]
    resumed = checkpoints.read_index(str(tmp_path / "killed"))["slots"]
    for slot in ("last", "best_loss", "best_map"):
        assert resumed[slot]["epoch"] == straight[slot]["epoch"], slot
        for key in ("map", "precision_at_k", "evaluated_at_epoch"):
            assert resumed[slot]["metrics"][key] == straight[slot]["metrics"][key], (slot, key)
        a = checkpoint_tensors(tmp_path / "straight", slot)
        b = checkpoint_tensors(tmp_path / "killed", slot)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=f"{slot} {name}")


# --------------------------------------------------------------------------- damaged folders
@pytest.mark.parametrize("std, reason", [
    (float("nan"), "NaN is not a valid value in a run config"),  # refused as it is parsed
    (float("inf"), "Infinity is not a valid value in a run config"),
    (-1.0, "damaged normalization"), ("1.0", "damaged normalization")])
def test_nan_normalization_in_run_config_is_detected(evaluated_run, tmp_path, std, reason):
    model_dir = tmp_path / "run"
    shutil.copytree(evaluated_run, model_dir)
    config = json.loads((model_dir / RUN_CONFIG).read_text())
    config["normalization"]["std"] = std
    (model_dir / RUN_CONFIG).write_text(json.dumps(config))
    with pytest.raises(RunFolderError, match=reason):
        export_run(DCBH, str(model_dir), str(tmp_path / "export"))
    with pytest.raises(RunFolderError, match=reason):
        evaluate_run(DCBH, str(model_dir))
    assert not (tmp_path / "export").exists()


def test_nan_in_checkpoint_statistics_is_detected(evaluated_run, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(evaluated_run, model_dir)
    run = load_run(DCBH, str(model_dir), "best_map")
    stat = [v for v in run.model.non_trainable_variables if "moving_variance" in v.path][0]
    stat.assign(tf.fill(tf.shape(stat), np.nan))
    record = checkpoints.read_index(str(model_dir))["slots"]["best_map"]
    tf.train.Checkpoint(model=run.model).write(
        str(model_dir / "checkpoints" / record["dir"] / "ckpt"))
    with pytest.raises(RunFolderError, match="non-finite values .*moving_variance"):
        export_run(DCBH, str(model_dir), str(tmp_path / "export"))
    with pytest.raises(RunFolderError, match="non-finite"):
        evaluate_run(DCBH, str(model_dir))
    assert not (tmp_path / "export").exists()


def test_truncated_checkpoint_is_a_clear_error(evaluated_run, tmp_path):
    model_dir = tmp_path / "run"
    shutil.copytree(evaluated_run, model_dir)
    record = checkpoints.read_index(str(model_dir))["slots"]["best_map"]
    data_file = glob.glob(str(model_dir / "checkpoints" / record["dir"] / "ckpt.data-*"))[0]
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    with pytest.raises(RunFolderError, match="damaged checkpoint"):
        export_run(DCBH, str(model_dir), str(tmp_path / "export"))


# --------------------------------------------------------------------------- permissions
def test_run_outputs_are_readable_like_any_other_output(data, tmp_path):
    previous = os.umask(0o022)
    try:
        model_dir = tmp_path / "run"
        train(_dcbh(), data, _config(model_dir, 1))
    finally:
        os.umask(previous)
    state = checkpoints.read_index(str(model_dir))["slots"]["last"]["dir"]
    folders = [model_dir / "checkpoints", model_dir / "checkpoints" / state]
    files = [model_dir / RUN_CONFIG, model_dir / "metrics.json",
             model_dir / "checkpoints" / "index.json",
             model_dir / "checkpoints" / state / "info.json",
             model_dir / "checkpoints" / state / "metrics.json"]
    for folder in folders:
        assert oct(folder.stat().st_mode & 0o777) == oct(0o755), folder
    for file in files:
        assert oct(file.stat().st_mode & 0o777) == oct(0o644), file
