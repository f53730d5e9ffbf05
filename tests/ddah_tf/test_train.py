"""DDAH through the shared loop: the two-optimiser step, the schedule, resume and the
command line (tiny widths, tiny synthetic data).

Learning and the served export are checked for every registered method by
tests/methods/test_learning.py and tests/methods/test_served_export.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from method_cli import ENV, run_cli
from tiny_training import checkpoint_tensors, step_row, synthetic_split

from common.training.saved_run import evaluate_run, load_run
from common.training.loop import TrainConfig, _Trainer, train
from common.training.optimizers import make_optimizer
from common.training.reporting import METRICS, read_history
from ddah_tf.method import DDAH, LOSS_PARTS

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]
WIDTH = 0.125  # attention widths 4/8/16, trunk 4/8/16/32: a step takes milliseconds


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """4 identities x (6 train + 2 test)."""
    return synthetic_split(tmp_path_factory.mktemp("tiny") / "data", 4, 6, 2)


# ---------------------------------------------------------------------------- the step
def _step_against_reference(data, model_dir, eager: bool, adam_epsilon: float,
                            statistics: str = "both_passes"):
    """One loop step and the reference (ddah_gradients, then a trunk Adam and an attention
    Adam applied in that order) from the same state and batch. The reference's forward is
    the original's (both passes update the moving batch-norm statistics), hence the
    default ``statistics``."""
    import keras
    import tensorflow as tf

    from ddah_tf.gradients import ddah_gradients
    from ddah_tf.variable_groups import (attention_variables, trunk_variables,
                                         unoptimised_variables)

    keras.utils.set_random_seed(0)
    config = TrainConfig(epochs=1, model_dir=str(model_dir), batch_size=12,
                         adam_epsilon=adam_epsilon)
    trainer = _Trainer(DDAH(num_bits=12, width_multiplier=WIDTH,
                            batch_norm_statistics=statistics), data, config)
    model = trainer.model
    assert [g.name for g in trainer.groups] == ["trunk", "attention"]
    assert [len(o.variables) for o in trainer.optimizers] == [
        2 * len(g.variables) + 2 for g in trainer.groups]  # moments + iterations, rate
    trainer.set_learning_rate(0)
    images, labels = next(iter(trainer.pipeline.epoch(0)))
    before = [v.numpy() for v in model.variables]
    tf.config.run_functions_eagerly(eager)
    try:
        out = trainer.steps.train_step(images, labels)
        values = step_row(out)
    finally:
        tf.config.run_functions_eagerly(False)
    loop = [v.numpy() for v in model.variables]
    loop_optimizers = [[v.numpy() for v in o.variables] for o in trainer.optimizers]

    for variable, value in zip(model.variables, before):
        variable.assign(value)
    reference = ddah_gradients(model, images, labels)
    trunk_adam = make_optimizer(config, "float32", trunk_variables(model))
    attention_adam = make_optimizer(config, "float32", attention_variables(model))
    trunk_adam.apply_gradients(reference.trunk)
    attention_adam.apply_gradients(reference.attention)
    expected = [v.numpy() for v in model.variables]
    expected_optimizers = [[v.numpy() for v in o.variables]
                           for o in (trunk_adam, attention_adam)]
    groups = {"trunk": {id(v) for v in trunk_variables(model)},
              "attention": {id(v) for v in attention_variables(model)},
              "none": {id(v) for v in unoptimised_variables(model)}}
    return dict(values=values, names=list(out["parts"]), before=before, loop=loop,
                expected=expected, loop_optimizers=loop_optimizers,
                expected_optimizers=expected_optimizers, losses=reference.losses,
                variables=list(model.variables), groups=groups)


def test_one_step_is_the_originals_two_optimiser_step(tiny_data, tmp_path):
    """Run eagerly, the loop's step equals the reference bit for bit: one forward, trunk
    Adam with d loss_c + 1e-4 w, attention Adam with d (loss_c + loss_s) + 1e-4 w, both
    gradients from that forward, bn1 / bn2 never stepped."""
    got = _step_against_reference(tiny_data, tmp_path / "eager", eager=True, adam_epsilon=1e-8)
    losses = got["losses"]
    assert got["names"] == list(LOSS_PARTS)
    # [loss_c, nll_a, quantization_a, nll_b, quantization_b, correct, images]
    np.testing.assert_allclose(got["values"][:5], [float(losses[k]) for k in (
        "loss_c", "nll_a", "quantization_a", "nll_b", "quantization_b")], rtol=1e-6)
    assert got["values"][-1] == 12
    for variable, loop, expected in zip(got["variables"], got["loop"], got["expected"]):
        np.testing.assert_array_equal(loop, expected, err_msg=variable.path)
    for loop, expected in zip(got["loop_optimizers"], got["expected_optimizers"]):
        for a, b in zip(loop, expected):
            np.testing.assert_array_equal(a, b)
    # Each optimiser moved its own variables only; bn1 / bn2 stayed at 1 / 0.
    changed = {id(v) for v, a, b in zip(got["variables"], got["before"], got["loop"])
               if v.trainable and not np.array_equal(a, b)}
    assert got["groups"]["none"] and not changed & got["groups"]["none"]
    assert changed <= got["groups"]["trunk"] | got["groups"]["attention"]
    assert len(changed & got["groups"]["trunk"]) > 0.8 * len(got["groups"]["trunk"])
    assert len(changed & got["groups"]["attention"]) > 0.8 * len(got["groups"]["attention"])
    for variable, value in zip(got["variables"], got["loop"]):
        if id(variable) in got["groups"]["none"]:
            assert np.all(value == (1.0 if variable.name == "gamma" else 0.0)), variable.path
    for optimizer in got["loop_optimizers"]:
        assert optimizer[0] == 1  # iterations: each optimiser stepped once


def test_the_default_step_differs_from_the_original_in_the_trunks_statistics_only(tiny_data,
                                                                                   tmp_path):
    """With the moving statistics left to pass a (the default), one step moves every
    weight and optimiser state exactly as the original's; only the trunk's moving
    statistics differ (tests/common/models/test_batch_norm.py: they are pass a's alone)."""
    got = _step_against_reference(tiny_data, tmp_path / "eager", eager=True, adam_epsilon=1e-8,
                                  statistics="attended")
    differ = {v.path for v, loop, expected in zip(got["variables"], got["loop"], got["expected"])
              if not np.array_equal(loop, expected)}
    trunk_statistics = {v.path for v in got["variables"]
                        if v.name in ("moving_mean", "moving_variance")
                        and not v.path.startswith("spatial_attention")}
    assert differ == trunk_statistics
    for loop, expected in zip(got["loop_optimizers"], got["expected_optimizers"]):
        for a, b in zip(loop, expected):
            np.testing.assert_array_equal(a, b)


def test_compiled_step_matches_the_reference(tiny_data, tmp_path):
    """The tf.function step (the one training runs) agrees with the reference to float
    rounding (Adam's epsilon 1: a gradient that is 0 up to rounding makes a tiny step)."""
    got = _step_against_reference(tiny_data, tmp_path / "graph", eager=False, adam_epsilon=1.0)
    for variable, loop, expected in zip(got["variables"], got["loop"], got["expected"]):
        scale = 1e-6 + 1e-4 * float(np.max(np.abs(expected)))
        assert float(np.max(np.abs(loop - expected))) <= scale, variable.path


def test_optimizer_groups_are_checked():
    import tensorflow as tf

    from common.methods.base import HashingMethod, OptimizerGroup
    from common.training.optimizers import optimizer_groups

    a, b = tf.Variable(1.0), tf.Variable(2.0)
    with pytest.raises(ValueError, match="lower-case identifier"):
        OptimizerGroup("Trunk", (a,))
    with pytest.raises(ValueError, match="no variables"):
        OptimizerGroup("trunk", ())
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        OptimizerGroup("trunk", (a,), coupled_weight_decay=-1.0)
    with pytest.raises(ValueError, match="objective"):
        OptimizerGroup("trunk", (a,), objective=[1, 2])

    class Two(HashingMethod):
        def __init__(self, groups):
            self.groups = groups

        def optimizer_groups(self, model):
            return self.groups

    with pytest.raises(ValueError, match="repeat"):
        optimizer_groups(Two([OptimizerGroup("x", (a,)), OptimizerGroup("x", (b,))]), None)
    with pytest.raises(ValueError, match="shares variables"):
        optimizer_groups(Two([OptimizerGroup("x", (a,)), OptimizerGroup("y", (a, b))]), None)
    assert HashingMethod().learning_rate(7, 0.01) == 0.01


def test_a_model_only_checkpoint_holds_every_variable():
    """Evaluation and export restore the model alone: TensorFlow's checkpoint graph must
    reach every variable (it skipped the encoder when its layers sat in a list of pairs)."""
    from common.runs.checkpoints.store import untracked_variables

    for unused_bn3 in (False, True):
        model = DDAH(num_bits=12, width_multiplier=WIDTH, unused_bn3=unused_bn3).build_model(4)
        assert untracked_variables(model) == []


def test_settings_are_checked_and_recorded():
    method = DDAH(num_bits=16, width_multiplier=0.5, margin=0.1, weight_decay=0.0,
                  include_skip_batchnorms=True, lr_halve_every=3)
    assert DDAH.from_config(json.loads(json.dumps(method.config()))).config() == method.config()
    assert [method.learning_rate(e, 1e-3) for e in (0, 2, 3, 7)] == [1e-3, 1e-3, 5e-4, 2.5e-4]
    for bad in (dict(num_bits=0), dict(width_multiplier=0), dict(weight_decay=-1.0),
                dict(margin=float("nan")), dict(lr_halve_every=0), dict(quantization_weight=-1)):
        with pytest.raises(ValueError):
            DDAH(**bad)


_HINGE = r"""
from common.training.distribution import configure_cpu_devices, make_strategy
configure_cpu_devices(2)
import json
import numpy as np, tensorflow as tf
from common.models.replica_ops import replica_global
strategy = make_strategy("mirrored")
# per example: loss_a = w0 * xa, loss_b = w1 * xb; hinge of the batch means
xa = np.array([3.0, 2.0, 0.0, 0.5], np.float32)
xb = np.array([1.0, 1.0, 2.0, 0.5], np.float32)   # replica 0: a > b; replica 1: a < b
with strategy.scope():
    w = tf.Variable([1.0, 1.0])

def hinge(a, b):
    return tf.maximum(a - b, 0.0)

@tf.function
def distributed(use_global):
    def step():
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        a_local = tf.gather(tf.constant(xa), 2 * r + tf.range(2))
        b_local = tf.gather(tf.constant(xb), 2 * r + tf.range(2))
        with tf.GradientTape() as tape:
            a = tf.reduce_sum(w[0] * a_local) / 4.0     # this replica's share of the mean
            b = tf.reduce_sum(w[1] * b_local) / 4.0
            if use_global:
                a, b = replica_global(a), replica_global(b)
            value = hinge(a, b)
        return value, tape.gradient(value, w)
    value, grad = strategy.run(step)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
    return total / 2.0 if use_global else total, strategy.reduce(
        tf.distribute.ReduceOp.SUM, grad, axis=None)

with tf.GradientTape() as tape:
    one = hinge(tf.reduce_mean(w[0] * xa), tf.reduce_mean(w[1] * xb))
print(json.dumps({"one": [float(one), tape.gradient(one, w).numpy().tolist()],
                  "global": [float(v) if i == 0 else v.numpy().tolist()
                             for i, v in enumerate(distributed(True))],
                  "local": [float(v) if i == 0 else v.numpy().tolist()
                            for i, v in enumerate(distributed(False))]}))
"""


def test_the_hinge_sees_the_global_batch_under_a_distribution(tmp_path):
    """Two replicas whose local hinges disagree: replica_global gives every replica the
    global loss_a / loss_b, and the summed gradients equal one device's."""
    result = subprocess.run([sys.executable, "-c", _HINGE], env=ENV, capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    one_value, one_grad = got["one"]
    assert one_value == pytest.approx((5.5 - 4.5) / 4)             # global: a - b > 0
    np.testing.assert_allclose(one_grad, [5.5 / 4, -4.5 / 4])
    assert got["global"][0] == pytest.approx(one_value)
    np.testing.assert_allclose(got["global"][1], one_grad)
    assert got["local"][0] != pytest.approx(one_value)  # per-replica hinges would differ
    assert not np.allclose(got["local"][1], one_grad)


# ---------------------------------------------------------------------------- schedule, resume
def _resume_config(model_dir, epochs):
    return TrainConfig(epochs=epochs, model_dir=str(model_dir), batch_size=8, shuffle=True,
                       seed=3, eval_every=0, log_every_steps=0, deterministic=True)


def test_schedule_per_epoch_and_exact_resume(tiny_data, tmp_path):
    """Learning rate halved every epoch (lr_halve_every=1): a run stopped after epoch 1 and
    resumed to 2 equals the uninterrupted 2-epoch run bit for bit (both optimisers, their
    moments, step counts and rates, the weights, batch-norm statistics, the losses)."""
    method = lambda: DDAH(num_bits=12, width_multiplier=WIDTH, lr_halve_every=1)  # noqa: E731
    train(method(), tiny_data, _resume_config(tmp_path / "straight", 2))
    train(method(), tiny_data, _resume_config(tmp_path / "resumed", 1))
    assert [h["epoch"] for h in read_history(str(tmp_path / "resumed"))] == [1]
    train(method(), tiny_data, _resume_config(tmp_path / "resumed", 2))

    one = checkpoint_tensors(tmp_path / "straight")
    two = checkpoint_tensors(tmp_path / "resumed")
    assert sorted(one) == sorted(two)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
    h1, h2 = read_history(str(tmp_path / "straight")), read_history(str(tmp_path / "resumed"))
    assert [h["learning_rate"] for h in h1] == [h["learning_rate"] for h in h2] == [1e-3, 5e-4]
    assert [(h["loss"], h["loss_parts"]) for h in h1] == [(h["loss"], h["loss_parts"])
                                                          for h in h2]
    # One Adam per group in the checkpoint, each with its own step count and the epoch's rate.
    for group in ("trunk", "attention"):
        prefix = f"optimizer_{group}/"
        assert int(one[prefix + "_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 2 * 3  # 24 / 8
        assert float(one[prefix + "_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"]) == np.float32(5e-4)
    assert not any(k.startswith("optimizer/") for k in one)


# ---------------------------------------------------------------------------- command line
def test_train_command_line(tmp_path):
    model_dir = tmp_path / "run"
    result = run_cli("ddah_tf.train", [
        "--dataset", "synthetic", "--data_dir", str(tmp_path / "data"),
        "--synthetic_identities", "4", "--synthetic_train_per_identity", "4",
        "--synthetic_test_per_identity", "2", "--num_bits", "12", "--width_multiplier", "0.125",
        "--margin", "0.1", "--weight_decay", "0", "--include_skip_batchnorms",
        "--lr_halve_every", "1", "--batch_size", "8", "--epochs", "2", "--eval_every", "0",
        "--model_dir", str(model_dir)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 2/2 | train loss" in result.stdout and "nll_a" in result.stdout
    metrics = json.load(open(model_dir / METRICS))
    assert metrics["method"] == {"method": "ddah", "num_bits": 12, "width_multiplier": 0.125,
                                 "quantization_weight": 1e-3, "margin": 0.1,
                                 "weight_decay": 0.0, "include_skip_batchnorms": True,
                                 "unused_bn3": False, "min_max_epsilon": 0.0,
                                 "lr_halve_every": 1, "batch_norm_statistics": "attended"}
    assert metrics["epochs_completed"] == 2 and metrics["num_classes"] == 4
    assert [h["learning_rate"] for h in read_history(str(model_dir))] == [1e-3, 5e-4]
    attention = load_run(DDAH, str(model_dir), "last").model.get_layer("spatial_attention")
    for bn in (attention.bn1, attention.bn2):  # trained with --include_skip_batchnorms
        assert not np.all(bn.gamma.numpy() == 1.0) and not np.all(bn.beta.numpy() == 0.0)

    figures = evaluate_run(DDAH, str(model_dir), "last")  # python -m ddah_tf.evaluate's work
    assert figures["epoch"] == 2 and figures["queries"] == 8 and figures["database"] == 16
    assert figures["map"] == metrics["last"]["map"]  # the state's recorded figure, again
