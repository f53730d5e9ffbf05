"""The DDCH loss (ddch_tf.method.DDCH) against a numpy transcription of ddch_tf/README.md:

    cost = CE(logits) + CE(feature_logits) + 0.1 * mean((|relaxed| - 1)^2)
         + 1e-4 * 0.5 * sum ||f - c^f_y||^2 + 1e-3 * 0.5 * sum ||b - c^b_y||^2 + reg

All checks use a narrow backbone (width_multiplier=0.0625), 5 classes, distinct widths for
the codes, the feature layer and the hidden layer (so a mixed-up tensor cannot pass), and
a batch of 6 with repeated labels.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from numpy_reference import center_loss, center_update_delta, cross_entropy, sign
from tiny_networks import arr, checked_gradients, images


from common.models.regularization import decayed_kernels, weight_decay_loss
from ddch_tf.method import DDCH

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

TINY_WIDTH = 0.0625
NUM_CLASSES = 5
NUM_BITS = 12
FEATURE_UNITS = 24
HIDDEN_UNITS = 20
LABELS = np.array([2, 0, 2, 4, 2, 0], np.int32)     # 2 x3, 0 x2, 4 x1; 1 and 3 absent
BATCH = len(LABELS)
KERNEL_LAYERS = ["block1_1_conv", "block1_2_conv", "block2_1_conv", "block2_2_conv",
                 "block3_1_conv", "block3_2_conv", "block3_3_conv", "block4_1_conv",
                 "block4_2_conv", "block4_3_conv", "feature_dense", "hash_hidden_dense",
                 "hash_dense", "logits", "feature_logits"]
CENTERS = ("feature_center", "code_center")


def ddch(**kwargs):
    return DDCH(num_bits=NUM_BITS, feature_units=FEATURE_UNITS, hash_hidden_units=HIDDEN_UNITS,
                width_multiplier=TINY_WIDTH, **kwargs)


def make(seed=0, **kwargs):
    """A tiny DDCH method + model with random (non-initial) centers of both kinds."""
    keras.utils.set_random_seed(seed)
    method = ddch(**kwargs)
    model = method.build_model(NUM_CLASSES)
    rng = np.random.default_rng(seed + 100)
    for name in CENTERS:
        centers = model.get_layer(name).centers
        centers.assign(rng.normal(scale=0.5, size=tuple(centers.shape)).astype(np.float32))
    return method, model


def forward(method, model, training=False, seed=0):
    return method.named_outputs(model(images(seed), training=training))


def centers_of(model, name):
    return arr(model.get_layer(name).centers, np.float64)


@pytest.fixture(scope="module")
def tiny():
    method, model = make()
    outputs = forward(method, model)
    terms = method.loss_terms(model, outputs, tf.constant(LABELS))
    return method, model, outputs, terms


# ----------------------------------------------------------------------------- loss parts

def test_loss_term_names_and_types(tiny):
    _, _, _, terms = tiny
    assert list(terms) == ["classification", "feature_classification", "quantization",
                           "feature_center", "code_center", "regularization"]
    for value in terms.values():
        assert value.dtype == tf.float32 and value.shape == ()


def test_classification_terms(tiny):
    _, _, outputs, terms = tiny
    np.testing.assert_allclose(float(terms["classification"]),
                               cross_entropy(LABELS, arr(outputs["logits"])), rtol=1e-5)
    np.testing.assert_allclose(float(terms["feature_classification"]),
                               cross_entropy(LABELS, arr(outputs["feature_logits"])), rtol=1e-5)


def test_quantization_term(tiny):
    _, _, outputs, terms = tiny
    q = arr(outputs["relaxed_codes"], np.float64)
    assert q.shape == (BATCH, NUM_BITS)
    np.testing.assert_allclose(float(terms["quantization"]),
                               0.1 * np.mean((np.abs(q) - 1.0) ** 2), rtol=1e-5)


def test_feature_center_term(tiny):
    _, model, outputs, terms = tiny
    f = arr(outputs["features"], np.float64)
    assert f.shape == (BATCH, FEATURE_UNITS)
    expected = 1e-4 * center_loss(f, LABELS, centers_of(model, "feature_center"))
    assert expected > 0
    np.testing.assert_allclose(float(terms["feature_center"]), expected, rtol=1e-5)


def test_code_center_term_uses_the_binary_codes(tiny):
    _, model, outputs, terms = tiny
    relaxed = arr(outputs["relaxed_codes"], np.float64)
    b = sign(relaxed)                                 # from the relaxed codes, not the output
    np.testing.assert_array_equal(arr(outputs["codes"]), b)
    c = centers_of(model, "code_center")
    expected = 1e-3 * center_loss(b, LABELS, c)
    np.testing.assert_allclose(float(terms["code_center"]), expected, rtol=1e-5)
    # and not the same loss on the relaxed codes
    assert not np.isclose(expected, 1e-3 * center_loss(relaxed, LABELS, c), rtol=1e-3)


def test_int64_labels_give_the_same_terms(tiny):
    method, model, outputs, terms = tiny
    other = method.loss_terms(model, outputs, tf.constant(LABELS.astype(np.int64)))
    for k in ("classification", "feature_classification", "feature_center", "code_center"):
        np.testing.assert_allclose(float(other[k]), float(terms[k]), rtol=1e-6)


def test_mean_reduction_for_both_centers():
    method, model = make(center_reduction="mean")
    assert {model.get_layer(n).reduction for n in CENTERS} == {"mean"}
    outputs = forward(method, model)
    terms = method.loss_terms(model, outputs, tf.constant(LABELS))
    f = arr(outputs["features"], np.float64)
    b = sign(arr(outputs["relaxed_codes"]))
    np.testing.assert_allclose(
        float(terms["feature_center"]),
        1e-4 * center_loss(f, LABELS, centers_of(model, "feature_center"), "mean"), rtol=1e-5)
    np.testing.assert_allclose(
        float(terms["code_center"]),
        1e-3 * center_loss(b, LABELS, centers_of(model, "code_center"), "mean"), rtol=1e-5)


def test_weights_are_configurable(tiny):
    _, model, outputs, base = tiny
    other = ddch(quantization_weight=0.3, feature_center_weight=5e-4,
                 code_center_weight=2e-2).loss_terms(model, outputs, tf.constant(LABELS))
    np.testing.assert_allclose(float(other["quantization"]), 3 * float(base["quantization"]),
                               rtol=1e-5)
    np.testing.assert_allclose(float(other["feature_center"]), 5 * float(base["feature_center"]),
                               rtol=1e-5)
    np.testing.assert_allclose(float(other["code_center"]), 20 * float(base["code_center"]),
                               rtol=1e-5)
    zero = ddch(quantization_weight=0.0, feature_center_weight=0.0,
                code_center_weight=0.0).loss_terms(model, outputs, tf.constant(LABELS))
    assert float(zero["quantization"]) == float(zero["feature_center"]) == 0.0
    assert float(zero["code_center"]) == 0.0


# ----------------------------------------------------------------------------- regularization

def test_decayed_kernels_are_every_conv_and_dense_kernel(tiny):
    method, model, _, _ = tiny
    kernels = decayed_kernels(model)
    expected = [model.get_layer(name).kernel for name in KERNEL_LAYERS]
    assert len(kernels) == 15
    assert {id(k) for k in kernels} == {id(k) for k in expected}
    excluded = {id(model.get_layer(n).centers) for n in CENTERS}
    excluded |= {id(model.get_layer(n).bias) for n in ("logits", "feature_logits")}
    excluded |= {id(w) for layer in model.layers
                 if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights}
    assert not excluded & {id(k) for k in kernels}
    assert [k.path for k in method._kernels] == [k.path for k in kernels]


def kernel_sums(model):
    return [np.sum(arr(model.get_layer(n).kernel, np.float64) ** 2) for n in KERNEL_LAYERS]


@pytest.mark.parametrize("mode, scale", [("original", None), ("l2", None), ("l2", 1e-3),
                                         ("none", None)])
def test_regularization_modes(tiny, mode, scale):
    _, model, outputs, _ = tiny
    kwargs = {} if mode == "original" else {"weight_decay": mode}   # "original" is the default
    if scale is not None:
        kwargs["weight_decay_scale"] = scale
    method = ddch(**kwargs)
    assert method.weight_decay == mode
    value = float(method.loss_terms(model, outputs, tf.constant(LABELS))["regularization"])
    s = 2e-4 if scale is None else scale
    penalties = [s * k / 2 for k in kernel_sums(model)]
    if mode == "original":
        expected = sum(s * p ** 2 / 2 for p in penalties)
        assert 0 < expected < 1e-6                          # effectively no weight decay
        np.testing.assert_allclose(value, expected, rtol=1e-4)
    elif mode == "l2":
        expected = sum(penalties)
        assert expected > 1e-4
        np.testing.assert_allclose(value, expected, rtol=1e-5)
    else:
        assert value == 0.0
    np.testing.assert_allclose(float(weight_decay_loss(decayed_kernels(model), mode, s)), value,
                               rtol=1e-6)


# ----------------------------------------------------------------------------- settings

# Every setting's bad values, refused with the message naming it: tests/methods/test_settings.py.


def test_config_round_trip():
    method = DDCH(num_bits=16, feature_units=64, hash_hidden_units=32, quantization_weight=0.2,
                  feature_center_weight=3e-4, code_center_weight=5e-3, weight_decay="l2",
                  weight_decay_scale=1e-3, center_reduction="mean", width_multiplier=0.25)
    config = method.config()
    assert config["method"] == "ddch" == DDCH.name
    again = DDCH.from_config(config)
    assert isinstance(again, DDCH) and again.config() == config
    assert {k: v for k, v in config.items() if k != "method"} == {
        "num_bits": 16, "feature_units": 64, "hash_hidden_units": 32, "quantization_weight": 0.2,
        "feature_center_weight": 3e-4, "code_center_weight": 5e-3, "weight_decay": "l2",
        "weight_decay_scale": 1e-3, "center_reduction": "mean", "width_multiplier": 0.25}
    assert DDCH.from_config(DDCH().config()).config() == DDCH().config()
    with pytest.raises(ValueError, match="not 'ddch'"):
        DDCH.from_config({**config, "method": "dcbh"})


def test_defaults_follow_the_readme():
    config = DDCH().config()
    assert config == {"method": "ddch", "num_bits": 48, "feature_units": 512,
                      "hash_hidden_units": 512, "quantization_weight": 0.1,
                      "feature_center_weight": 1e-4, "code_center_weight": 1e-3,
                      "weight_decay": "original", "weight_decay_scale": 2e-4,
                      "center_reduction": "sum", "width_multiplier": 1.0}


# ----------------------------------------------------------------------------- center update

def test_before_optimizer_step_updates_both_center_sets():
    method, model = make(seed=2)
    outputs = forward(method, model, training=True, seed=4)
    before = {n: centers_of(model, n).copy() for n in CENTERS}
    x = {"feature_center": arr(outputs["features"], np.float64),
         "code_center": sign(arr(outputs["relaxed_codes"]))}
    others = {w.path: arr(w).copy() for w in model.weights
              if w.path not in {model.get_layer(n).centers.path for n in CENTERS}}
    method.before_optimizer_step(model, outputs, tf.constant(LABELS))
    for name in CENTERS:
        after = centers_of(model, name)
        expected = before[name] - center_update_delta(x[name], LABELS, before[name])
        np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        for y in (1, 3):                                   # absent labels untouched, bit for bit
            np.testing.assert_array_equal(after[y], before[name][y])
        for y in (0, 2, 4):
            assert not np.allclose(after[y], before[name][y]), (name, y)
        # label 2 (3 occurrences): c - 3 * (c - mean x) / 4
        np.testing.assert_allclose(
            after[2], before[name][2] - 0.75 * (before[name][2] - x[name][LABELS == 2].mean(0)),
            rtol=1e-5, atol=1e-6)
    for w in model.weights:
        if w.path in others:
            np.testing.assert_array_equal(arr(w), others[w.path], err_msg=w.path)


# ----------------------------------------------------------------------------- gradients

def test_code_center_gradient_reaches_the_hash_layer_straight_through():
    """d(code center)/d(hash_dense kernel) in inference mode, vs numpy with an identity STE.

    relaxed = tanh(BN(h @ W)), b = sign(relaxed) with gradient 1, so
    dL/dW = h^T [w * (b - c_y) * (1 - relaxed^2) * gamma / sqrt(var + eps)].
    """
    method, model = make(seed=5)
    bn = model.get_layer("hash_bn")
    rng = np.random.default_rng(5)
    bn.gamma.assign(rng.uniform(0.5, 1.5, NUM_BITS).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 1.5, NUM_BITS).astype(np.float32))
    x = images(seed=8)
    kernel = model.get_layer("hash_dense").kernel
    probe = keras.Model(model.input, model.get_layer("hash_hidden_relu").output)
    h = arr(probe(x, training=False), np.float64)
    with tf.GradientTape() as tape:
        outputs = method.named_outputs(model(x, training=False))
        loss = method.loss_terms(model, outputs, tf.constant(LABELS))["code_center"]
    grad = arr(tf.convert_to_tensor(tape.gradient(loss, kernel)), np.float64)
    assert grad.shape == (HIDDEN_UNITS, NUM_BITS) and np.any(grad != 0)
    relaxed = arr(outputs["relaxed_codes"], np.float64)
    b = sign(relaxed)
    c = centers_of(model, "code_center")
    scale = arr(bn.gamma, np.float64) / np.sqrt(arr(bn.moving_variance, np.float64) + 1e-3)
    upstream = 1e-3 * (b - c[LABELS]) * (1 - relaxed ** 2) * scale
    np.testing.assert_allclose(grad, h.T @ upstream, rtol=1e-4, atol=1e-9)


def test_every_trainable_weight_gets_a_gradient():
    method, model = make(seed=1)
    outputs, weights, grads = checked_gradients(method, model, images(seed=6), LABELS)
    # centers: the gradient reaches only the rows of present labels, and equals
    # -weight * sum_{i: y_i = y} (x_i - c_y)
    by_path = {w.path: g for w, g in zip(weights, grads)}
    xs = {"feature_center": (1e-4, arr(outputs["features"], np.float64)),
          "code_center": (1e-3, sign(arr(outputs["relaxed_codes"])))}
    for name, (weight, x) in xs.items():
        centers = model.get_layer(name).centers
        g = arr(tf.convert_to_tensor(by_path[centers.path]), np.float64)
        c = centers_of(model, name)
        expected = np.zeros_like(c)
        np.add.at(expected, LABELS, -weight * (x - c[LABELS]))
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-10, err_msg=name)
        assert np.all(g[[1, 3]] == 0)
