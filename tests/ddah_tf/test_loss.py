"""DDAH's loss terms (ddah_tf.losses), learning-rate schedule (ddah_tf.schedule) and the
two-sided gradients of one step (ddah_tf.gradients) against numpy and the original's
train.py:

    loss_pass = NLL(log_softmax(logits), y) + 0.001 * mean_i sum_k | |h_ik| - 1 |
    loss_c = loss_a + loss_b                      (trunk, optimizer_b)
    loss_s = max(0, m - loss_b + loss_a), m = 0   (attention, optimizer_a, after loss_c's
                                                   gradients were accumulated there too)
    Adam weight_decay 1e-4: grad += 1e-4 * w;  lr = 1e-3 * 0.5 ** (epoch // 100)
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import ddah_numpy_reference as ref
from tiny_networks import arr
from ddah_tf import losses, schedule
from ddah_tf.gradients import ddah_gradients
from ddah_tf.model import build_ddah
from ddah_tf.variable_groups import attention_variables, trunk_variables

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
              pytest.mark.usefixtures("seeded_weights")]

LABELS = np.array([0, 1, 1, 4, 2, 0])


def test_constants_are_the_originals():
    assert losses.QUANTIZATION_WEIGHT == 0.001           # LOSS_01
    assert losses.MARGIN == 0.0                          # m
    assert losses.WEIGHT_DECAY == 1e-4                   # Adam(weight_decay=0.0001), both
    assert (schedule.LEARNING_RATE, schedule.HALVE_EVERY_EPOCHS, schedule.EPOCHS,
            schedule.BATCH_SIZE, schedule.SHUFFLE) == (1e-3, 100, 1000, 256, True)
    assert (schedule.ADAM_BETAS, schedule.ADAM_EPSILON) == ((0.9, 0.999), 1e-8)
    assert (schedule.HASH_BITS, schedule.NUM_CLASSES_FACESCRUB) == (48, 530)


def test_nll_is_the_mean_negative_log_softmax():
    logits = np.random.default_rng(0).normal(scale=3, size=(6, 5)).astype(np.float32)
    got = float(losses.nll_loss(tf.constant(LABELS), tf.constant(logits)))
    assert got == pytest.approx(ref.nll(LABELS, logits), rel=1e-6)
    # Labels as the original's DataLoader gives them, (batch, 1), are flattened (target.view(-1)).
    got_2d = float(losses.nll_loss(tf.constant(LABELS[:, None]), tf.constant(logits)))
    assert got_2d == pytest.approx(got, rel=1e-7)


def test_quantization_sums_over_bits_and_averages_over_samples():
    h = np.random.default_rng(1).normal(scale=1.5, size=(6, 48)).astype(np.float32)
    got = float(losses.quantization_loss(tf.constant(h)))
    assert got == pytest.approx(ref.quantization(h, 0.001), rel=1e-5)
    per_sample = np.abs(np.abs(h.astype(np.float64)) - 1).sum(axis=1)
    assert got == pytest.approx(0.001 * per_sample.mean(), rel=1e-5)
    # a sum over the bits (48 x the mean), not DDH's mean
    assert got == pytest.approx(48 * 0.001 * np.abs(np.abs(h) - 1).mean(), rel=1e-5)
    assert float(losses.quantization_loss(tf.constant(h), weight=0.5)) == pytest.approx(
        500 * got, rel=1e-5)
    assert float(losses.quantization_loss(tf.constant([[1.0, -1.0]]))) == 0.0
    assert float(losses.quantization_loss(tf.zeros((0, 4)))) == 0.0      # empty replica batch


def test_pass_loss_is_nll_plus_quantization():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    h = rng.normal(size=(6, 8)).astype(np.float32)
    got = float(losses.pass_loss(tf.constant(LABELS), tf.constant(logits), tf.constant(h)))
    assert got == pytest.approx(ref.nll(LABELS, logits) + ref.quantization(h), rel=1e-5)


@pytest.mark.parametrize("loss_a, loss_b, margin, want", [
    (2.0, 1.5, 0.0, 0.5),       # attended pass worse: hinge active
    (1.0, 1.5, 0.0, 0.0),       # attended pass better: nothing
    (1.0, 1.5, 0.8, 0.3),       # a margin asks for more
    (3.0, 3.0, 0.0, 0.0),
])
def test_attention_hinge_and_objectives(loss_a, loss_b, margin, want):
    a, b = tf.constant(loss_a), tf.constant(loss_b)
    assert float(losses.attention_hinge(a, b, margin)) == pytest.approx(want)
    assert float(losses.trunk_objective(a, b)) == pytest.approx(loss_a + loss_b)
    assert float(losses.attention_objective(a, b, margin)) == pytest.approx(
        loss_a + loss_b + want)


def test_hinge_gradient_passes_at_zero_like_torch_clamp():
    """torch.clamp(x, 0) back-propagates where x >= 0, the boundary included."""
    for value, want in ((0.0, 1.0), (0.3, 1.0), (-0.3, 0.0)):
        a, b = tf.Variable(1.0 + value), tf.Variable(1.0)
        with tf.GradientTape() as tape:
            y = losses.attention_hinge(a, b)
        ga, gb = tape.gradient(y, [a, b])
        assert (float(ga), float(gb)) == (want, -want)


def test_l2_penalty_and_coupled_weight_decay():
    rng = np.random.default_rng(3)
    variables = [tf.Variable(rng.normal(size=s).astype(np.float32)) for s in ((3, 4), (4,))]
    want = 0.5 * 1e-4 * sum(np.sum(arr(v).astype(np.float64) ** 2) for v in variables)
    assert float(losses.l2_penalty(variables)) == pytest.approx(want, rel=1e-5)
    with tf.GradientTape() as tape:
        penalty = losses.l2_penalty(variables, rate=0.1)
    for g, v in zip(tape.gradient(penalty, variables), variables):
        np.testing.assert_allclose(arr(g), 0.1 * arr(v), rtol=1e-6)   # = Adam's grad += wd * w
    grads = [tf.ones((3, 4)), None]
    decayed = losses.add_coupled_weight_decay(grads, variables, rate=0.1)
    np.testing.assert_allclose(arr(decayed[0]), 1.0 + 0.1 * arr(variables[0]), rtol=1e-6)
    assert decayed[1] is None
    with pytest.raises(ValueError, match="1 gradients for 2 variables"):
        losses.add_coupled_weight_decay(grads[:1], variables)


def test_learning_rate_halves_every_100_epochs():
    assert [schedule.learning_rate(e) for e in (0, 99, 100, 199, 200, 999)] == [
        1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1e-3 * 0.5 ** 9]
    assert schedule.learning_rate(10, base=0.1, halve_every=5) == pytest.approx(0.025)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        schedule.learning_rate(-1)


# --------------------------------------------------------------------------- the step's gradients
@pytest.fixture(scope="module")
def step_setup():
    model = build_ddah(5, 8, width_multiplier=0.125)
    x = np.random.default_rng(4).uniform(-1, 1, (len(LABELS), 32, 32, 3)).astype(np.float32)
    weights = [v.numpy() for v in model.variables]
    return model, x, weights


def separate_gradients(model, x, weights):
    """d loss_a and d loss_b per variable group, from the same weights (BN statistics reset)."""
    for v, w in zip(model.variables, weights):
        v.assign(w)
    trunk, attention = trunk_variables(model), attention_variables(model)
    with tf.GradientTape(persistent=True) as tape:
        la, ha, lb, hb = model(x, training=True)
        loss_a = losses.pass_loss(tf.constant(LABELS), la, ha)
        loss_b = losses.pass_loss(tf.constant(LABELS), lb, hb)
    out = {"loss_a": float(loss_a), "loss_b": float(loss_b),
           "a_att": tape.gradient(loss_a, attention), "a_trunk": tape.gradient(loss_a, trunk),
           "b_trunk": tape.gradient(loss_b, trunk), "b_att": tape.gradient(loss_b, attention)}
    for v, w in zip(model.variables, weights):
        v.assign(w)
    return out


@pytest.mark.parametrize("margin", [-100.0, 100.0])
def test_step_gradients_follow_the_originals_accumulation(step_setup, margin):
    """Attention: (1 + [m - loss_b + loss_a >= 0]) d loss_a + wd w (loss_c's backward fills
    the attention's gradients, loss_s's adds to them); trunk: d(loss_a + loss_b) + wd w."""
    model, x, weights = step_setup
    parts = separate_gradients(model, x, weights)
    assert all(g is None for g in parts["b_att"])             # loss_b never reaches attention
    result = ddah_gradients(model, x, tf.constant(LABELS), margin=margin, weight_decay=0.01)
    for v, w in zip(model.variables, weights):
        v.assign(w)
    values = {k: float(v) for k, v in result.losses.items()}
    assert values["loss_a"] == pytest.approx(parts["loss_a"], rel=1e-5)
    assert values["loss_b"] == pytest.approx(parts["loss_b"], rel=1e-5)
    assert values["loss_c"] == pytest.approx(parts["loss_a"] + parts["loss_b"], rel=1e-5)
    assert values["loss_a"] == pytest.approx(values["nll_a"] + values["quantization_a"], rel=1e-6)
    active = margin - parts["loss_b"] + parts["loss_a"] >= 0
    assert values["loss_s"] == pytest.approx(max(0.0, margin - parts["loss_b"] + parts["loss_a"]),
                                             rel=1e-5)
    factor = 2.0 if active else 1.0
    assert [id(v) for _, v in result.attention] == [id(v) for v in attention_variables(model)]
    assert [id(v) for _, v in result.trunk] == [id(v) for v in trunk_variables(model)]
    for (g, v), ga in zip(result.attention, parts["a_att"]):
        np.testing.assert_allclose(arr(g), factor * arr(ga) + 0.01 * arr(v), rtol=1e-4, atol=1e-6)
    for (g, v), ga, gb in zip(result.trunk, parts["a_trunk"], parts["b_trunk"]):
        np.testing.assert_allclose(arr(g), arr(ga) + arr(gb) + 0.01 * arr(v), rtol=1e-4,
                                   atol=1e-6)
