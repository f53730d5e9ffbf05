"""The shared training loop on tiny synthetic data: learning, files, resume, crashes, NaN."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf

from tiny_training import chance_map, checkpoint_tensors, synthetic_split

from common.data import DataFormatError, DataFormatWarning, Normalization, write_pickle_folder
from common.io import atomic
from common.runs.checkpoints import store as checkpoints
from common.training.data import load_split_data
from common.training.evaluate import evaluate_retrieval
from common.runs.run_config import RUN_CONFIG, RunConfigMismatchError
from common.training.epoch import NonFiniteLossError
from common.training.loop import TrainConfig, train
from common.training.reporting import METRICS, read_history
from dcbh_tf.method import DCBH

pytestmark = pytest.mark.slow  # trains models or starts processes

SLOTS = ("last", "best_loss", "best_map")
METRIC_FIELDS = ("epoch", "map", "precision_at_k", "precision_within_radius",
                 "recall_within_radius", "hamming", "ties")


@pytest.fixture(scope="module")
def learn_data(tmp_path_factory):
    """8 identities x (20 train + 4 test): enough to learn something in seconds.

    12 epochs of 5 steps give mAP 0.34-0.41 over seeds 0-4 (chance: 0.15).
    """
    return synthetic_split(tmp_path_factory.mktemp("learn") / "data", 8, 20, 4)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """8 identities x (6 train + 2 test): 3 steps of 16 per epoch."""
    return synthetic_split(tmp_path_factory.mktemp("tiny") / "data", 8, 6, 2)


def _tiny_config(model_dir, epochs, **kwargs) -> TrainConfig:
    settings = dict(batch_size=16, eval_every=0, log_every_steps=0)
    settings.update(kwargs)
    return TrainConfig(epochs=epochs, model_dir=str(model_dir), **settings)


def _dcbh(**kwargs) -> DCBH:
    return DCBH(width_multiplier=kwargs.pop("width_multiplier", 0.0625), **kwargs)


@pytest.fixture(scope="module")
def learned_run(learn_data, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("learned") / "run"
    config = TrainConfig(epochs=12, model_dir=str(model_dir), batch_size=32, eval_every=4,
                         log_every_steps=2)
    start = time.perf_counter()
    report = train(DCBH(width_multiplier=0.125), learn_data, config)
    return model_dir, report, time.perf_counter() - start


# --------------------------------------------------------------------------- learning
def test_short_training_lowers_the_loss_and_beats_chance(learned_run, learn_data):
    model_dir, report, _ = learned_run
    history = read_history(str(model_dir))
    assert [h["epoch"] for h in history] == list(range(1, 13))
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    assert history[-1]["accuracy"] > 0.5
    # Chance: the exact expected mAP of a random ranking (every code equal, random ties).
    chance = chance_map(learn_data)
    assert 0.1 < chance < 0.2
    assert report["best_map"]["map"] > chance + 0.1, (report["best_map"]["map"], chance)
    assert report["best_map"]["map"] >= max(report["last"]["map"], report["best_loss"]["map"])


def test_run_files_describe_the_run(learned_run, learn_data):
    model_dir, report, _ = learned_run
    metrics = json.load(open(model_dir / METRICS))
    assert metrics == json.loads(json.dumps(report))
    for slot in SLOTS:
        assert set(METRIC_FIELDS) <= set(metrics[slot])
        assert metrics[slot]["hamming"] == "exact" and metrics[slot]["ties"] == "index"
        assert 0.0 <= metrics[slot]["map"] <= 1.0
    assert metrics["last"]["epoch"] == metrics["epochs_completed"] == 12
    losses = {h["epoch"]: h["loss"] for h in read_history(str(model_dir))}
    assert metrics["best_loss"]["loss"] == min(losses.values())
    assert losses[metrics["best_loss"]["epoch"]] == metrics["best_loss"]["loss"]
    assert metrics["images_per_second"] > 0 and metrics["wall_time_s"] > 0
    assert metrics["train_config"]["batch_size"] == 32
    assert metrics["protocol"]["queries"] == "test split"

    run_config = json.load(open(model_dir / RUN_CONFIG))
    assert run_config["method"] == DCBH(width_multiplier=0.125).config()
    assert run_config["num_classes"] == 8
    assert run_config["dataset"]["dataset"] == "synthetic"
    assert run_config["dataset"]["train_images"] == 160
    assert run_config["normalization"] == {"mean": learn_data.normalization.mean,
                                           "std": learn_data.normalization.std}
    assert run_config["train_config"]["epochs"] == 12
    assert run_config["train_config"]["adam_epsilon"] == 1e-8
    assert DCBH.from_config(run_config["method"]).config() == run_config["method"]

    index = checkpoints.read_index(str(model_dir))
    assert set(index["slots"]) == set(SLOTS)
    assert index["slots"]["best_map"]["metrics"]["map"] == metrics["best_map"]["map"]
    events = os.listdir(model_dir / "tensorboard")
    assert events and all(e.startswith("events.out.tfevents") for e in events)


def test_finished_run_is_only_reevaluated(learned_run, learn_data, tmp_path):
    model_dir, report, first_seconds = learned_run
    copy = tmp_path / "run"
    shutil.copytree(model_dir, copy)
    config = TrainConfig(epochs=12, model_dir=str(copy), batch_size=32, eval_every=4,
                         ties="expected")
    again = train(DCBH(width_multiplier=0.125), learn_data, config)
    assert again["epochs_completed"] == 12
    assert len(read_history(str(copy))) == 12  # no epoch was trained again
    assert again["last"]["ties"] == "expected"
    assert again["session_train_seconds"] == 0.0
    same = train(DCBH(width_multiplier=0.125), learn_data,
                 TrainConfig(epochs=12, model_dir=str(copy), batch_size=32))
    assert same["last"]["map"] == report["last"]["map"]  # index ties again: same figure


def test_a_run_with_another_model_is_refused(learned_run, learn_data):
    model_dir, _, _ = learned_run
    before = open(model_dir / RUN_CONFIG).read()
    config = TrainConfig(epochs=13, model_dir=str(model_dir), batch_size=32)
    with pytest.raises(RunConfigMismatchError, match="new --model_dir") as info:
        train(DCBH(width_multiplier=0.125, num_bits=24), learn_data, config)
    assert "num_bits" in str(info.value)
    assert open(model_dir / RUN_CONFIG).read() == before


# --------------------------------------------------------------------------- resume
def test_resumed_run_equals_uninterrupted_run(tiny_data, tmp_path, op_determinism):
    def config(model_dir, epochs):
        return _tiny_config(model_dir, epochs, shuffle=True, seed=3, deterministic=True)

    train(_dcbh(), tiny_data, config(tmp_path / "straight", 3))
    train(_dcbh(), tiny_data, config(tmp_path / "resumed", 1))
    assert checkpoints.read_index(str(tmp_path / "resumed"))["slots"]["last"]["epoch"] == 1
    report = train(_dcbh(), tiny_data, config(tmp_path / "resumed", 3))  # fresh model + method
    assert report["epochs_completed"] == 3
    epochs_trained = [json.loads(line)["epoch"]
                      for line in open(tmp_path / "resumed" / "history.jsonl")]
    assert epochs_trained == [1, 2, 3]  # the second call trained epochs 2 and 3 only

    straight = checkpoint_tensors(tmp_path / "straight")
    resumed = checkpoint_tensors(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    names = list(straight)
    # Everything is in there: centers (8 classes x 288 features; with their Adam moments),
    # batch-norm statistics, Adam's iteration count and moments, the epoch counter.
    assert sum(straight[n].shape == (8, 288) for n in names) == 3
    assert any("moving_mean" in n for n in names) and any("moving_variance" in n for n in names)
    trainable = sum("optimizer/_trainable_variables" in n for n in names)
    assert sum("optimizer/_variables" in n for n in names) == 2 * trainable > 20
    for name in names:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)
    assert int(straight["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 9
    assert int(straight["epoch/.ATTRIBUTES/VARIABLE_VALUE"]) == 3


def test_crash_while_saving_keeps_the_previous_epoch_and_resumes(tiny_data, tmp_path,
                                                                monkeypatch):
    model_dir = tmp_path / "run"
    real_write = atomic.write_json_atomic
    index_writes = []

    def killed_at_second_index_write(path, obj):
        if path.endswith("index.json"):
            index_writes.append(path)
            if len(index_writes) == 2:  # epoch 2: state folder renamed, index not yet switched
                raise KeyboardInterrupt("simulated kill")
        real_write(path, obj)

    monkeypatch.setattr(checkpoints, "write_json_atomic", killed_at_second_index_write)
    with pytest.raises(KeyboardInterrupt):
        train(_dcbh(), tiny_data, _tiny_config(model_dir, 3))
    monkeypatch.undo()
    index = checkpoints.read_index(str(model_dir))
    assert index["slots"]["last"]["epoch"] == 1
    folders = [e for e in os.listdir(model_dir / "checkpoints") if e != "index.json"]
    assert len(folders) == 2  # epoch 1 (named by the index) + epoch 2 (orphaned)

    report = train(_dcbh(), tiny_data, _tiny_config(model_dir, 3))
    assert report["epochs_completed"] == 3
    lines = [json.loads(line) for line in open(model_dir / "history.jsonl")]
    assert [line["epoch"] for line in lines] == [1, 2, 3]  # resumed at 2, not restarted
    live = {r["dir"] for r in checkpoints.read_index(str(model_dir))["slots"].values()}
    assert set(os.listdir(model_dir / "checkpoints")) - {"index.json"} == live
    assert checkpoints.read_index(str(model_dir))["slots"]["last"]["optimizer_iterations"] == 9


# --------------------------------------------------------------------------- selection
class RisingLoss(DCBH):
    """DCBH plus a parameter-free term that grows every step: epoch 1 keeps the lowest loss."""

    def build_model(self, num_classes):
        model = super().build_model(num_classes)
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        return model

    def loss_terms(self, model, outputs, labels):
        terms = super().loss_terms(model, outputs, labels)
        terms["rising"] = 10.0 * tf.cast(self.steps, tf.float32)
        return terms

    def before_optimizer_step(self, model, outputs, labels):
        super().before_optimizer_step(model, outputs, labels)
        self.steps.assign_add(1)


def test_evaluating_best_loss_does_not_roll_training_back(tiny_data, tmp_path, op_determinism):
    def config(model_dir, eval_every):
        return _tiny_config(model_dir, 3, eval_every=eval_every, deterministic=True)

    train(RisingLoss(width_multiplier=0.0625), tiny_data, config(tmp_path / "eval", 2))
    train(RisingLoss(width_multiplier=0.0625), tiny_data, config(tmp_path / "plain", 0))
    index = checkpoints.read_index(str(tmp_path / "eval"))["slots"]
    assert index["best_loss"]["epoch"] == 1 and index["last"]["epoch"] == 3
    # Epoch 2 evaluated the (older) epoch-1 state, then trained on from epoch 2's weights:
    # the final weights equal those of a run that never evaluated.
    assert index["best_loss"]["metrics"]["evaluated_at_epoch"] == 2
    straight = checkpoint_tensors(tmp_path / "plain")
    evaluated = checkpoint_tensors(tmp_path / "eval")
    for name in straight:
        np.testing.assert_array_equal(straight[name], evaluated[name], err_msg=name)
    # The figures recorded for best_loss are those of the epoch-1 weights.
    method = RisingLoss(width_multiplier=0.0625)
    model = method.build_model(tiny_data.num_classes)
    checkpoints.restore_model_weights(model, str(tmp_path / "eval"), "best_loss")
    figures = evaluate_retrieval(model, method, tiny_data)
    for key, value in figures.items():
        assert index["best_loss"]["metrics"][key] == value, key
    best = max(index["best_loss"]["metrics"]["map"], index["last"]["metrics"]["map"])
    assert index["best_map"]["metrics"]["map"] == best


# --------------------------------------------------------------------------- NaN
class NaNFromStep(DCBH):
    """DCBH whose loss becomes NaN from a given (0-based) global training step on."""

    def __init__(self, nan_from_step: int, **kwargs):
        super().__init__(**kwargs)
        self.nan_from_step = nan_from_step
        self.steps = None

    def build_model(self, num_classes):
        model = super().build_model(num_classes)
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        return model

    def loss_terms(self, model, outputs, labels):
        terms = super().loss_terms(model, outputs, labels)
        terms["poison"] = tf.where(self.steps >= self.nan_from_step, np.float32(np.nan),
                                   np.float32(0.0))
        return terms

    def before_optimizer_step(self, model, outputs, labels):
        super().before_optimizer_step(model, outputs, labels)
        self.steps.assign_add(1)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    model_dir = tmp_path / "run"
    method = NaNFromStep(4, width_multiplier=0.0625)  # step 4 = epoch 2, step 2 of 3
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 2/3: loss nan") as info:
        train(method, tiny_data, _tiny_config(model_dir, 3))
    assert (info.value.epoch, info.value.step, info.value.last_good_epoch) == (2, 2, 1)
    assert "last good checkpoint (epoch 1)" in str(info.value)
    index = checkpoints.read_index(str(model_dir))
    assert {r["epoch"] for r in index["slots"].values()} == {1}
    tensors = checkpoint_tensors(model_dir)
    assert all(np.all(np.isfinite(t)) for t in tensors.values() if t.dtype.kind == "f")
    assert not os.path.exists(model_dir / METRICS)
    assert [h["epoch"] for h in read_history(str(model_dir))] == [1]


# --------------------------------------------------------------------------- data
def _write_split(folder, labels, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, size=(len(labels), 3072)).astype(np.float32)
    write_pickle_folder(folder, x, np.asarray(labels, np.int64))
    return x


def test_known_dataset_rejects_labels_beyond_its_class_count(tmp_path):
    _write_split(tmp_path / "train_folder_facescrub", [0, 1, 600])
    _write_split(tmp_path / "test_folder_facescrub", [0, 1])
    with pytest.raises(DataFormatError, match="train_folder_facescrub.*label 600.*530 classes"):
        load_split_data("facescrub", str(tmp_path))


def test_folder_dataset_classes_labels_and_preprocessing(tmp_path):
    train_x = _write_split(tmp_path / "train", [0, 1, 2, 4, 4, 0])
    test_x = _write_split(tmp_path / "test", [0, 3], seed=1)
    with pytest.warns(DataFormatWarning, match="never occur in the train split"):
        data = load_split_data("folder", train_dir=str(tmp_path / "train"),
                               test_dir=str(tmp_path / "test"))
    assert data.num_classes == 5
    assert data.train_images.shape == (6, 32, 32, 3) and data.train_images.dtype == np.float32
    assert data.normalization == Normalization.fit(train_x)
    expected_test = Normalization.fit(test_x).apply(test_x)  # the test split's OWN statistics
    np.testing.assert_array_equal(
        data.test_images, expected_test.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert data.description["num_classes"] == 5

    _write_split(tmp_path / "test_bad", [0, 5])
    with pytest.raises(DataFormatError, match="test_bad.*label 5"):
        load_split_data("folder", train_dir=str(tmp_path / "train"),
                        test_dir=str(tmp_path / "test_bad"))
    with pytest.raises(ValueError, match="--train_dir and --test_dir"):
        load_split_data("folder", train_dir=str(tmp_path / "train"))


def test_synthetic_dataset_is_generated_once_and_checked(tmp_path):
    root = tmp_path / "synthetic"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every test identity occurs in train
        data = synthetic_split(root, 3, 2, 1)
    assert data.num_classes == 3 and len(data.train_labels) == 6
    assert data.description["synthetic"]["num_identities"] == 3
    again = load_split_data("synthetic", str(root))  # existing set, any size accepted
    np.testing.assert_array_equal(again.train_images, data.train_images)
    with pytest.raises(DataFormatError, match="num_identities=3 \\(requested 4\\)"):
        synthetic_split(root, 4, 2, 1)
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]  # no temp folders left
