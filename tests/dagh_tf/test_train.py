"""DAGH through the shared loop: the step against an independent reference, resume, the
harness's ablation rows and the command line (tiny widths, tiny synthetic data).

Learning and the served export are checked for every registered method by
tests/methods/test_learning.py and tests/methods/test_served_export.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from method_cli import run_cli
from tiny_training import checkpoint_tensors, step_row, synthetic_split

from common.runs.run_config import RUN_CONFIG
from common.training.loop import TrainConfig, _Trainer, train
from common.training.optimizers import make_optimizer
from common.training.reporting import METRICS, read_history
from dagh_tf.method import DAGH, LOSS_PARTS

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]
WIDTH = 0.125


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 identities x (6 train + 2 test)."""
    return synthetic_split(tmp_path_factory.mktemp("tiny") / "data", 4, 6, 2)


# ---------------------------------------------------------------------------- the step
def _reference_step(model, images, labels, scale, margin, decay, optimizer):
    """The step written out: forward in training mode, the discrete identity loss from
    the binary codes in numpy-checkable pieces, coupled L2, one Adam."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        logits, relaxed = model(images, training=True)
        labels_ = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        onehot = tf.one_hot(labels_, logits.shape[-1])
        shifted = logits - scale * margin * onehot
        identity = tf.reduce_mean(-tf.reduce_sum(onehot * tf.nn.log_softmax(shifted), -1))
        quantization = 1e-3 * tf.reduce_mean(tf.reduce_sum(tf.abs(tf.abs(relaxed) - 1), -1))
        total = identity + quantization
    variables = model.trainable_variables
    grads = tape.gradient(total, variables)
    optimizer.apply_gradients([(g + decay * v, v) for g, v in zip(grads, variables)])
    return float(identity), float(quantization), logits.numpy(), relaxed.numpy()


def test_one_step_equals_the_written_out_step(tiny_data, tmp_path):
    """Eagerly, the loop's step equals the reference to float rounding: one Adam over
    every variable (the identity centers included), coupled L2 1e-4, the margin loss."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    config = TrainConfig(epochs=1, model_dir=str(tmp_path / "run"), batch_size=12,
                         adam_epsilon=1.0)
    method = DAGH(num_bits=12, width_multiplier=WIDTH, margin=0.3, scale=8.0)
    trainer = _Trainer(method, tiny_data, config)
    model = trainer.model
    assert [g.name for g in trainer.groups] == ["all"]
    trainer.set_learning_rate(0)
    images, labels = next(iter(trainer.pipeline.epoch(0)))
    before = [v.numpy() for v in model.variables]
    tf.config.run_functions_eagerly(True)
    try:
        out = trainer.steps.train_step(images, labels)
        values = step_row(out)
    finally:
        tf.config.run_functions_eagerly(False)
    loop = [v.numpy() for v in model.variables]
    for variable, value in zip(model.variables, before):
        variable.assign(value)
    centers = np.where(model.get_layer("identity_head").centers.numpy() >= 0, 1.0, -1.0)
    adam = make_optimizer(config, "float32", model.trainable_variables)
    identity, quantization, logits, relaxed = _reference_step(
        model, images, labels, 8.0, 0.3, 1e-4, adam)
    assert list(out["parts"]) == list(LOSS_PARTS)
    np.testing.assert_allclose(values[1:3], [identity, quantization], rtol=1e-6)
    # The head's logits are the scaled Hamming similarities of the binary codes.
    codes = np.where(relaxed >= 0, 1.0, -1.0)
    hamming = (codes[:, None, :] != centers[None]).sum(-1)
    np.testing.assert_allclose(logits, 8.0 * (1 - 2 * hamming / 12), rtol=0, atol=1e-5)
    for variable, got, expected in zip(model.variables, loop, [v.numpy() for v in
                                                               model.variables]):
        scale = 1e-6 + 1e-5 * float(np.max(np.abs(expected)))
        assert float(np.max(np.abs(got - expected))) <= scale, variable.path
    changed = [v.path for v, a, b in zip(model.variables, before, loop)
               if v.trainable and not np.array_equal(a, b)]
    assert len(changed) == len(model.trainable_variables)   # every weight moves


# ---------------------------------------------------------------------------- resume
def _resume_config(model_dir, epochs):
    return TrainConfig(epochs=epochs, model_dir=str(model_dir), batch_size=8, shuffle=True,
                       seed=3, eval_every=0, log_every_steps=0, deterministic=True)


def test_schedule_and_exact_resume(tiny_data, tmp_path):
    """A run stopped after epoch 1 and resumed to 2 equals the uninterrupted run bit for
    bit (weights, identity centers, Adam state and rate, batch-norm statistics, losses)."""
    method = lambda: DAGH(num_bits=12, width_multiplier=WIDTH, lr_halve_every=1)  # noqa: E731
    train(method(), tiny_data, _resume_config(tmp_path / "straight", 2))
    train(method(), tiny_data, _resume_config(tmp_path / "resumed", 1))
    assert [h["epoch"] for h in read_history(str(tmp_path / "resumed"))] == [1]
    train(method(), tiny_data, _resume_config(tmp_path / "resumed", 2))
    one = checkpoint_tensors(tmp_path / "straight")
    two = checkpoint_tensors(tmp_path / "resumed")
    assert sorted(one) == sorted(two)
    assert any(v.shape == (4, 12) for v in one.values())      # the identity centers
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    h1, h2 = read_history(str(tmp_path / "straight")), read_history(str(tmp_path / "resumed"))
    assert [h["learning_rate"] for h in h1] == [h["learning_rate"] for h in h2] == [1e-3, 5e-4]
    assert [(h["loss"], h["loss_parts"]) for h in h1] == [(h["loss"], h["loss_parts"])
                                                          for h in h2]


def test_a_model_only_checkpoint_holds_every_variable():
    """Evaluation and export restore the model alone: every variable (the identity
    centers, the spatial gates) must be reachable from the checkpoint graph."""
    from common.runs.checkpoints.store import untracked_variables

    for settings in (dict(), dict(attention="parallel", identity_head="softmax")):
        model = DAGH(num_bits=12, width_multiplier=WIDTH, **settings).build_model(4)
        assert untracked_variables(model) == []


# ---------------------------------------------------------------------------- harness rows
def test_ablation_rows_remove_one_part_each():
    from common.reproduce.methods import check_methods, display_name, make_deep_method

    full = make_deep_method("dagh", 48, 0.25).config()
    for row, (key, value) in {"dagh_no_cascade": ("attention", "parallel"),
                              "dagh_no_discrete": ("hash_layer", "tanh"),
                              "dagh_no_identity": ("identity_head", "softmax")}.items():
        config = make_deep_method(row, 48, 0.25).config()
        assert config == {**full, key: value}, row
        assert display_name(row).startswith("DAGH without")
    assert make_deep_method("dagh_no_parts", 48, 0.25).config() == {
        **full, "attention": "parallel", "hash_layer": "tanh", "identity_head": "softmax"}
    assert check_methods(["dagh_no_identity", "ddah", "dagh"]) == [
        "ddah", "dagh", "dagh_no_identity"]


# ---------------------------------------------------------------------------- command line
def test_train_evaluate_export_command_line(tmp_path):
    model_dir = tmp_path / "run"
    result = run_cli("dagh_tf.train", [
        "--dataset", "synthetic", "--data_dir", str(tmp_path / "data"),
        "--synthetic_identities", "4", "--synthetic_train_per_identity", "4",
        "--synthetic_test_per_identity", "2", "--num_bits", "12", "--width_multiplier", "0.125",
        "--attention", "parallel", "--backward", "clipped", "--margin", "0.1", "--scale", "8",
        "--batch_size", "8", "--epochs", "2", "--eval_every", "0",
        "--model_dir", str(model_dir)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2 | train loss" in result.stdout and "identity" in result.stdout
    config = json.load(open(model_dir / RUN_CONFIG))["method"]
    assert config == DAGH(num_bits=12, width_multiplier=0.125, attention="parallel",
                          backward="clipped", margin=0.1, scale=8.0).config()
    result = run_cli("dagh_tf.evaluate",
                     ["--model_dir", str(model_dir), "--checkpoint", "last",
                      "--output", str(tmp_path / "eval.json")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "eval.json").read_text())  # the state's figures, again
    assert figures["map"] == json.loads((model_dir / METRICS).read_text())["last"]["map"]
    assert f"mAP {figures['map']:.4f}" in result.stdout
    result = run_cli("dagh_tf.export", ["--model_dir", str(model_dir), "--checkpoint", "last",
                                        "--export_dir", str(tmp_path / "export")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "export" / "saved_model.pb").exists()
