"""Adam on the centers' sparse gradient: TF1's update (default) and Keras 3's (option).

The reference is a numpy transcription of TF1's ``tf.train.AdamOptimizer`` on an
``IndexedSlices`` gradient (``_apply_sparse_duplicate_indices`` then
``_apply_sparse_shared``): repeated indices summed, both moments decayed on every
row, (1-b1)*g and (1-b2)*g^2 added at the summed rows, every row of the variable
stepped by lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps).
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.reproduce.cells import CellSettingsError, finished_cell
from common.reproduce.layout import cell_dir
from common.runs.run_config import record_setting_changes
from common.training.loop import TrainConfig
from common.training.optimizers import make_optimizer
from common.training.steps import make_steps
from common.training.sparse_gradients import gradients_for_adam
from dcbh_tf.method import DCBH

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8
# label 0 seen 7 times, 1 once, 2 twice; 3 and 4 absent
BATCHES = [np.array([0, 0, 1, 0, 0, 2, 0, 0, 2, 0]), np.array([2, 2, 2, 0, 3, 3]),
           np.array([0, 0, 0, 0, 0, 0, 0, 1])]


def tf1_sparse_adam(var, m, v, t, indices, values):
    """One step of TF1's AdamOptimizer on IndexedSlices(values, indices); float64 numpy."""
    unique = sorted(set(indices.tolist()))
    summed = np.stack([values[indices == i].sum(axis=0) for i in unique])  # deduplicate
    lr = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
    m = m * B1
    m[unique] += summed * (1 - B1)
    v = v * B2
    v[unique] += summed * summed * (1 - B2)
    return var - lr * m / (np.sqrt(v) + EPS), m, v


def keras_per_row_adam(var, m, v, t, indices, values):
    """Keras 3's Adam on the same slices: each row squared before the rows are added."""
    g = np.zeros_like(var)
    g2 = np.zeros_like(var)
    np.add.at(g, indices, values)
    np.add.at(g2, indices, values * values)
    lr = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
    m = m + (g - m) * (1 - B1)
    v = v + (g2 - v) * (1 - B2)
    return var - lr * m / (np.sqrt(v) + EPS), m, v


def center_steps(mode, reference):
    """Three center-loss steps with repeated labels, through the loop's optimizer path."""
    rng = np.random.default_rng(0)
    start = rng.normal(size=(5, 3))
    centers = tf.Variable(start.astype(np.float32))
    optimizer = make_optimizer(TrainConfig(epochs=1, model_dir="unused", sparse_adam=mode),
                               "float32", [centers])
    var, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for t, labels in enumerate(BATCHES, start=1):
        features = rng.normal(size=(len(labels), 3))
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_sum(tf.square(
                tf.constant(features, tf.float32) - tf.gather(centers, labels)))
        grad = tape.gradient(loss, centers)
        assert isinstance(grad, tf.IndexedSlices)
        optimizer.apply_gradients(zip(gradients_for_adam([grad], mode), [centers]))
        values = (var[labels] - features)    # d loss / d gathered rows, one per example
        var, m, v = reference(var, m, v, t, labels, values)
    return centers.numpy(), var


def test_tf1_mode_is_tf1_sparse_adam_with_duplicate_indices():
    got, want = center_steps("tf1", tf1_sparse_adam)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_keras_mode_is_keras_per_row_update():
    got, want = center_steps("keras", keras_per_row_adam)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_the_two_modes_differ_only_on_repeated_rows():
    tf1, _ = center_steps("tf1", tf1_sparse_adam)
    keras_rows, _ = center_steps("keras", keras_per_row_adam)
    moved = np.abs(tf1 - keras_rows).max(axis=1)
    assert moved[0] > 1e-4          # label 0: 7, 0 and 7 times in the three batches
    assert moved[4] == 0.0          # never seen: both only decay their zero moments


def test_default_is_the_original():
    assert TrainConfig(epochs=1, model_dir="x").sparse_adam == "tf1"
    with pytest.raises(ValueError, match="sparse_adam must be one of"):
        TrainConfig(epochs=1, model_dir="x", sparse_adam="sum").validate()
    with pytest.raises(ValueError, match="sparse_adam"):
        gradients_for_adam([], "dense")


def dcbh_after_one_step(mode):
    keras.utils.set_random_seed(3)
    method = DCBH(width_multiplier=0.0625)
    model = method.build_model(5)
    config = TrainConfig(epochs=1, model_dir="unused", sparse_adam=mode)
    optimizer = make_optimizer(config, "float32", model.trainable_variables)
    train_step = make_steps(model, method, [optimizer], False, mode).train_step
    rng = np.random.default_rng(5)
    images = rng.uniform(-1, 1, size=(12, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 0, 0, 0, 1, 2, 2, 0, 3, 0, 0, 1], np.int32)
    train_step(tf.constant(images), tf.constant(labels))
    return {w.path: w.numpy() for w in model.trainable_variables}


@pytest.mark.slow
def test_training_step_mode_changes_only_the_centers():
    tf1, keras_rows = dcbh_after_one_step("tf1"), dcbh_after_one_step("keras")
    differ = sorted(p for p in tf1 if not np.allclose(tf1[p], keras_rows[p], rtol=0, atol=1e-7))
    assert differ == ["center_loss/centers"]


def test_resuming_a_run_made_before_the_option_records_the_change():
    old = {"train_config": {"epochs": 5, "learning_rate": 1e-3}}
    new = {"train_config": {"epochs": 5, "learning_rate": 1e-3, "sparse_adam": "tf1"}}
    record_setting_changes(old, new, epoch=3)
    assert new["setting_changes"] == [{"from_epoch": 4, "changed": {"sparse_adam":
                                                                    ["keras", "tf1"]}}]
    same = {"train_config": {"epochs": 5, "learning_rate": 1e-3, "sparse_adam": "keras"}}
    record_setting_changes(old, same, epoch=3)
    assert "setting_changes" not in same


def test_a_table_cell_made_before_the_option_counts_as_keras(tmp_path):
    folder = cell_dir(str(tmp_path), "dcbh", 12)
    os.makedirs(folder)
    with open(os.path.join(folder, "cell.json"), "w") as f:
        json.dump({"settings": {"epochs": 3}}, f)
    assert finished_cell(str(tmp_path), "dcbh", 12,
                         {"epochs": 3, "deterministic": False, "sparse_adam": "keras"})
    with pytest.raises(CellSettingsError, match="sparse_adam"):
        finished_cell(str(tmp_path), "dcbh", 12,
                      {"epochs": 3, "deterministic": False, "sparse_adam": "tf1"})


def test_keras_update_moves_a_label_seen_n_times_up_to_sqrt_n_times_further():
    """First step, 7 identical rows: TF1 steps by lr, Keras 3 by sqrt(7) * lr."""
    steps = {}
    for mode in ("tf1", "keras"):
        centers = tf.Variable(np.zeros((2, 1), np.float32))
        optimizer = make_optimizer(TrainConfig(epochs=1, model_dir="unused"), "float32", [centers])
        grad = tf.IndexedSlices(tf.ones((7, 1)), tf.zeros((7,), tf.int32), tf.constant([2, 1]))
        optimizer.apply_gradients(zip(gradients_for_adam([grad], mode), [centers]))
        steps[mode] = -float(centers.numpy()[0, 0])
    assert steps["tf1"] == pytest.approx(LR, rel=1e-4)
    assert steps["keras"] == pytest.approx(np.sqrt(7) * LR, rel=1e-4)
