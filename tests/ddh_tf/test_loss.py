"""The DDH loss (ddh_tf.method.DDH) against numpy hand computations.

cost = CE(logits) + 0.01 * mean(| |h| - 1 |) + 1e-4 * sum(w^2) over the kernels of the
three convs, the locally connected layer, the face-feature Dense, divide-and-encode and
the softmax Dense (Keras 1's ``l2(1e-4)``: c * sum(w^2), no halving; no bias, no BN).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from numpy_reference import cross_entropy
from tiny_networks import arr

from ddh_tf.method import DDH, ddh_kernels
from ddh_tf.model import build_ddh

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

NUM_CLASSES = 5
NUM_BITS = 8
LABELS = np.array([0, 1, 1, 4, 2, 0])
DECAYED_LAYERS = ("conv1", "conv2", "conv3", "local4", "face_feature", "divide_and_encode",
                  "logits")


@pytest.fixture(scope="module")
def tiny():
    """A DDH model (8 bits, 5 classes), its method, one batch of 6 and its outputs."""
    method = DDH(num_bits=NUM_BITS)
    model = method.build_model(NUM_CLASSES)
    x = np.random.default_rng(0).uniform(-1, 1, (len(LABELS), 32, 32, 3)).astype(np.float32)
    outputs = method.named_outputs(model(x, training=True))
    terms = {k: float(v) for k, v in
             method.loss_terms(model, outputs, tf.constant(LABELS)).items()}
    return method, model, x, outputs, terms




def test_loss_term_names(tiny):
    _, _, _, outputs, terms = tiny
    assert set(terms) == {"classification", "quantization", "regularization"}
    assert set(outputs) == {"logits", "relaxed_codes"}
    assert outputs["logits"].shape == (6, NUM_CLASSES)
    assert outputs["relaxed_codes"].shape == (6, NUM_BITS)


def test_classification_term(tiny):
    _, _, _, outputs, terms = tiny
    expected = cross_entropy(LABELS, arr(outputs["logits"]))
    assert terms["classification"] == pytest.approx(expected, rel=1e-5)


def test_quantization_term(tiny):
    _, _, _, outputs, terms = tiny
    h = arr(outputs["relaxed_codes"], np.float64)
    per_example = np.abs(np.abs(h) - 1).mean(axis=1)        # the original's loss_01 layer
    assert terms["quantization"] == pytest.approx(0.01 * per_example.mean(), rel=1e-5)
    assert terms["quantization"] > 0


def test_quantization_weight_scales_the_term(tiny):
    _, model, _, outputs, terms = tiny
    other = DDH(num_bits=NUM_BITS, quantization_weight=0.5)
    got = float(other.loss_terms(model, outputs, tf.constant(LABELS))["quantization"])
    assert got == pytest.approx(50 * terms["quantization"], rel=1e-5)


def test_decayed_kernels_are_exactly_the_listed_ones(tiny):
    _, model, _, _, _ = tiny
    kernels = ddh_kernels(model)
    assert [v.path for v in kernels] == [f"{name}/kernel" for name in DECAYED_LAYERS]
    shapes = [tuple(v.shape) for v in kernels]
    assert shapes == [(3, 3, 3, 20), (2, 2, 20, 40), (2, 2, 40, 60), (4, 240, 80),
                      (860, 4 * NUM_BITS), (NUM_BITS, 4), (NUM_BITS, NUM_CLASSES)]
    decayed = {id(v) for v in kernels}
    # Everything else trainable is a bias or a BN parameter.
    for v in model.trainable_weights:
        if id(v) not in decayed:
            assert v.name in ("bias", "gamma", "beta"), v.path


def test_regularization_term_is_keras1_l2(tiny):
    _, model, _, _, terms = tiny
    expected = sum(1e-4 * np.sum(arr(model.get_layer(name).kernel, np.float64) ** 2)
                   for name in DECAYED_LAYERS)
    assert terms["regularization"] == pytest.approx(expected, rel=1e-5)


def test_regularization_scale_and_none(tiny):
    method, model, _, outputs, terms = tiny
    scaled = DDH(num_bits=NUM_BITS, weight_decay_scale=3e-4)
    got = float(scaled.loss_terms(model, outputs, tf.constant(LABELS))["regularization"])
    assert got == pytest.approx(3 * terms["regularization"], rel=1e-5)
    off = DDH(num_bits=NUM_BITS, weight_decay="none")
    off_terms = off.loss_terms(model, outputs, tf.constant(LABELS))
    assert float(off_terms["regularization"]) == 0.0
    assert float(off_terms["classification"]) == pytest.approx(terms["classification"])


def test_kernels_follow_the_model_given(tiny):
    """A method asked about another model than the one it built decays that model's kernels."""
    method, _, x, _, _ = tiny
    other = build_ddh(NUM_CLASSES, NUM_BITS)
    outputs = method.named_outputs(other(x, training=False))
    got = float(method.loss_terms(other, outputs, tf.constant(LABELS))["regularization"])
    expected = sum(1e-4 * np.sum(arr(other.get_layer(name).kernel, np.float64) ** 2)
                   for name in DECAYED_LAYERS)
    assert got == pytest.approx(expected, rel=1e-5)


# Every setting's bad values, refused with the message naming it: tests/methods/test_settings.py.


def test_config_round_trip():
    method = DDH(num_bits=12, split_num=2, quantization_weight=0.1, weight_decay="none",
                 weight_decay_scale=3e-4)
    config = method.config()
    assert config == {"method": "ddh", "num_bits": 12, "split_num": 2,
                      "quantization_weight": 0.1, "weight_decay": "none",
                      "weight_decay_scale": 3e-4}
    assert DDH.from_config(config).config() == config
    assert DDH().config() == {"method": "ddh", "num_bits": 48, "split_num": 4,
                              "quantization_weight": 0.01, "weight_decay": "l2",
                              "weight_decay_scale": 1e-4}
    with pytest.raises(ValueError, match="not 'ddh'"):
        DDH.from_config({**config, "method": "ddch"})
    assert DDH.name == "ddh" and DDH.output_names == ("logits", "relaxed_codes")


def test_before_optimizer_step_changes_nothing(tiny):
    method, model, _, outputs, _ = tiny
    before = [arr(v).copy() for v in model.weights]
    method.before_optimizer_step(model, outputs, tf.constant(LABELS))
    for v, old in zip(model.weights, before):
        np.testing.assert_array_equal(arr(v), old)


def test_every_trainable_weight_gets_a_gradient():
    method = DDH(num_bits=NUM_BITS)
    model = method.build_model(NUM_CLASSES)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        outputs = method.named_outputs(model(x, training=True))
        cost = tf.add_n(list(method.loss_terms(model, outputs, tf.constant(LABELS)).values()))
    grads = tape.gradient(cost, model.trainable_weights)
    for v, g in zip(model.trainable_weights, grads):
        assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0, v.path
