"""The DCBH loss (dcbh_tf.method.DCBH) against a numpy transcription of the original.

Reference: ../shared/reference/original_dcbh.md ("Loss"):
    cost = CE(logits) + CE(center_logits) + 0.1 * mean|0.5 - |q|| + 1e-4 * center + reg
All checks use a narrow backbone (width_multiplier=0.0625), 5 classes and a batch of 6
with repeated labels.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from numpy_reference import center_update_delta, cross_entropy
from tiny_networks import arr, checked_gradients, images


from common.models.regularization import decayed_kernels, weight_decay_loss
from dcbh_tf.method import DCBH

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

TINY_WIDTH = 0.0625
NUM_CLASSES = 5
LABELS = np.array([2, 0, 2, 4, 2, 0], np.int32)     # 2 x3, 0 x2, 4 x1; 1 and 3 absent
BATCH = len(LABELS)
KERNEL_LAYERS = ["block1_1_conv", "block1_2_conv", "block2_1_conv", "block2_2_conv",
                 "block3_1_conv", "block3_2_conv", "block3_3_conv", "block4_1_conv",
                 "block4_2_conv", "block4_3_conv", "feature_dense", "logits", "center_logits"]


def make(seed=0, **kwargs):
    """A tiny DCBH method + model with random (non-initial) centers."""
    keras.utils.set_random_seed(seed)
    method = DCBH(width_multiplier=TINY_WIDTH, **kwargs)
    model = method.build_model(NUM_CLASSES)
    centers = model.get_layer("center_loss").centers
    centers.assign(np.random.default_rng(seed + 100).normal(
        scale=0.5, size=tuple(centers.shape)).astype(np.float32))
    return method, model


def forward(method, model, training=False, seed=0):
    return method.named_outputs(model(images(seed), training=training))






@pytest.fixture(scope="module")
def tiny():
    method, model = make()
    outputs = forward(method, model)
    return method, model, outputs


# ----------------------------------------------------------------------------- loss parts

def test_loss_term_names(tiny):
    method, model, outputs = tiny
    terms = method.loss_terms(model, outputs, tf.constant(LABELS))
    assert set(terms) == {"classification", "center_classification", "quantization", "center",
                          "regularization"}
    for value in terms.values():
        assert value.dtype == tf.float32 and value.shape == ()


def test_classification_terms(tiny):
    method, model, outputs = tiny
    terms = method.loss_terms(model, outputs, tf.constant(LABELS))
    np.testing.assert_allclose(float(terms["classification"]),
                               cross_entropy(LABELS, arr(outputs["logits"])), rtol=1e-5)
    np.testing.assert_allclose(float(terms["center_classification"]),
                               cross_entropy(LABELS, arr(outputs["center_logits"])), rtol=1e-5)


def test_labels_shape_and_dtype_agnostic(tiny):
    method, model, outputs = tiny
    a = method.loss_terms(model, outputs, tf.constant(LABELS))
    b = method.loss_terms(model, outputs, tf.constant(LABELS.astype(np.int64)))
    for k in ("classification", "center_classification", "center"):
        np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=1e-6)


def test_quantization_term(tiny):
    method, model, outputs = tiny
    terms = method.loss_terms(model, outputs, tf.constant(LABELS))
    q = arr(outputs["relaxed_codes"], np.float64)
    assert q.shape == (BATCH, 48)
    np.testing.assert_allclose(float(terms["quantization"]),
                               0.1 * np.mean(np.abs(0.5 - np.abs(q))), rtol=1e-5)


def test_center_term_sum(tiny):
    method, model, outputs = tiny
    terms = method.loss_terms(model, outputs, tf.constant(LABELS))
    f = arr(outputs["features"], np.float64)
    c = arr(model.get_layer("center_loss").centers, np.float64)
    expected = 1e-4 * 0.5 * np.sum((f - c[LABELS]) ** 2)
    np.testing.assert_allclose(float(terms["center"]), expected, rtol=1e-5)


def test_center_term_mean_reduction():
    method, model = make(center_reduction="mean")
    assert model.get_layer("center_loss").reduction == "mean"
    outputs = forward(method, model)
    terms = method.loss_terms(model, outputs, tf.constant(LABELS))
    f = arr(outputs["features"], np.float64)
    c = arr(model.get_layer("center_loss").centers, np.float64)
    expected = 1e-4 * 0.5 * np.sum((f - c[LABELS]) ** 2) / BATCH
    np.testing.assert_allclose(float(terms["center"]), expected, rtol=1e-5)


def test_weights_are_configurable(tiny):
    _, model, outputs = tiny
    base = DCBH(width_multiplier=TINY_WIDTH).loss_terms(model, outputs, tf.constant(LABELS))
    other = DCBH(width_multiplier=TINY_WIDTH, quantization_weight=0.3,
                 center_weight=2e-4).loss_terms(model, outputs, tf.constant(LABELS))
    np.testing.assert_allclose(float(other["quantization"]), 3 * float(base["quantization"]),
                               rtol=1e-5)
    np.testing.assert_allclose(float(other["center"]), 2 * float(base["center"]), rtol=1e-5)


# ----------------------------------------------------------------------------- regularization

def test_decayed_kernels_are_the_13_conv_and_dense_kernels(tiny):
    _, model, _ = tiny
    kernels = decayed_kernels(model)
    expected = [model.get_layer(name).kernel for name in KERNEL_LAYERS]
    assert len(kernels) == 13
    assert sorted(k.path for k in kernels) == sorted(k.path for k in expected)
    assert {id(k) for k in kernels} == {id(k) for k in expected}
    assert all(k.path.endswith("kernel") for k in kernels)
    excluded = {id(model.get_layer("center_loss").centers)}
    excluded |= {id(w) for layer in model.layers
                 if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights}
    excluded |= {id(model.get_layer(n).bias) for n in ("feature_dense", "logits", "center_logits")}
    assert not excluded & {id(k) for k in kernels}


def test_method_caches_the_same_kernels(tiny):
    method, model, _ = tiny
    assert [k.path for k in method._kernels] == [k.path for k in decayed_kernels(model)]


def kernel_sums(model):
    return [np.sum(arr(model.get_layer(n).kernel, np.float64) ** 2) for n in KERNEL_LAYERS]


def test_regularization_original(tiny):
    _, model, outputs = tiny
    method = DCBH(width_multiplier=TINY_WIDTH)             # default: "original"
    assert method.weight_decay == "original"
    value = float(method.loss_terms(model, outputs, tf.constant(LABELS))["regularization"])
    penalties = [2e-4 * s / 2 for s in kernel_sums(model)]
    expected = sum(2e-4 * p ** 2 / 2 for p in penalties)
    assert 0 < expected < 1e-6                              # effectively no weight decay
    np.testing.assert_allclose(value, expected, rtol=1e-4)
    np.testing.assert_allclose(float(weight_decay_loss(decayed_kernels(model), "original")),
                               expected, rtol=1e-4)


def test_regularization_l2(tiny):
    _, model, outputs = tiny
    method = DCBH(width_multiplier=TINY_WIDTH, weight_decay="l2")
    value = float(method.loss_terms(model, outputs, tf.constant(LABELS))["regularization"])
    expected = sum(2e-4 * s / 2 for s in kernel_sums(model))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    scaled = DCBH(width_multiplier=TINY_WIDTH, weight_decay="l2", weight_decay_scale=1e-3)
    np.testing.assert_allclose(
        float(scaled.loss_terms(model, outputs, tf.constant(LABELS))["regularization"]),
        5 * expected, rtol=1e-5)


def test_regularization_none(tiny):
    _, model, outputs = tiny
    method = DCBH(width_multiplier=TINY_WIDTH, weight_decay="none")
    assert float(method.loss_terms(model, outputs, tf.constant(LABELS))["regularization"]) == 0.0


def test_regularization_bad_mode(tiny):
    _, model, outputs = tiny
    with pytest.raises(ValueError, match="weight decay"):
        weight_decay_loss(decayed_kernels(model), "L2 ")


# Every setting's bad values, refused with the message naming it: tests/methods/test_settings.py.


# ----------------------------------------------------------------------------- center update

def test_before_optimizer_step_direct_center_update():
    method, model = make(seed=2)
    outputs = forward(method, model, training=True, seed=4)
    centers = model.get_layer("center_loss").centers
    before = arr(centers, np.float64).copy()
    features = arr(outputs["features"], np.float64)
    method.before_optimizer_step(model, outputs, tf.constant(LABELS))
    after = arr(centers, np.float64)
    delta = center_update_delta(features, LABELS, before)
    np.testing.assert_allclose(before - after, delta, rtol=1e-5, atol=1e-6)
    # absent labels untouched, bit for bit
    for y in (1, 3):
        np.testing.assert_array_equal(after[y], before[y])
    # label 2 (3 occurrences): c - 3 * (c - mean f) / 4
    expected = before[2] - 0.75 * (before[2] - features[LABELS == 2].mean(0))
    np.testing.assert_allclose(after[2], expected, rtol=1e-5, atol=1e-6)


def test_center_update_does_not_touch_other_weights():
    method, model = make(seed=3)
    outputs = forward(method, model)
    others = {w.path: arr(w).copy() for w in model.weights if w.path != "center_loss/centers"}
    method.before_optimizer_step(model, outputs, tf.constant(LABELS))
    for w in model.weights:
        if w.path in others:
            np.testing.assert_array_equal(arr(w), others[w.path])


# ----------------------------------------------------------------------------- gradients

def test_every_trainable_weight_gets_a_gradient():
    method, model = make(seed=1)
    _, weights, grads = checked_gradients(method, model, images(seed=6), LABELS)
    assert "center_loss/centers" in [w.path for w in weights]
    # centers: the gradient of 1e-4 * center reaches only the rows of present labels
    g_centers = arr(tf.convert_to_tensor(grads[[w.path for w in weights].index(
        "center_loss/centers")]))
    assert np.all(g_centers[[1, 3]] == 0) and np.all(np.any(g_centers[[0, 2, 4]] != 0, axis=1))


def test_one_full_training_step_moves_weights():
    """Direct center update, then one Adam step on the same gradients (TF1 defaults)."""
    method, model = make(seed=4)
    labels = tf.constant(LABELS)
    optimizer = keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    before = {w.path: arr(w).copy() for w in model.trainable_weights}
    with tf.GradientTape() as tape:
        outputs = method.named_outputs(model(images(seed=7), training=True))
        total = tf.add_n(list(method.loss_terms(model, outputs, labels).values()))
    grads = tape.gradient(total, model.trainable_weights)
    method.before_optimizer_step(model, outputs, labels)
    optimizer.apply_gradients(zip(grads, model.trainable_weights))
    unchanged = [w.path for w in model.trainable_weights
                 if np.array_equal(arr(w), before[w.path])]
    assert not unchanged, unchanged
