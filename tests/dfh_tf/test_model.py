"""The DFH network and method: outputs, weight counts by hand, settings, and the stages'
loss parts against the loss functions computed from the model's outputs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from common.models.backbone import BLOCKS
from common.methods.base import HashingMethod
from dfh_tf import losses
from dfh_tf.method import DFH, LOSS_PARTS
from dfh_tf.model import OUTPUT_NAMES, build_dfh

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")
WIDTH = 0.125


def _backbone_trainable(width):
    count, channels_in = 0, 3
    for block in BLOCKS:
        for filters in block:
            out = max(1, int(round(filters * width)))
            count += 9 * channels_in * out + 2 * out       # conv (no bias) + BN gamma, beta
            channels_in = out
    return count, max(1, int(round(256 * width))) + max(1, int(round(512 * width)))


@pytest.mark.parametrize("bits, classes, units", [(12, 5, 64), (48, 311, 512)])
def test_weight_count_by_hand(bits, classes, units):
    backbone, fused = _backbone_trainable(WIDTH)
    heads = (fused * units + 2 * units             # feature dense (no bias) + BN
             + units * classes + classes           # feature classifier
             + units * bits + 2 * bits             # hash dense (no bias) + BN
             + bits * classes + classes)           # code classifier
    model = build_dfh(classes, bits, units, WIDTH)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == backbone + heads


def test_outputs_relaxed_codes_are_tanh_of_the_activations_and_logits_classify_them():
    model = build_dfh(6, 12, 32, WIDTH)
    assert model.output_names == list(OUTPUT_NAMES)
    x = np.random.default_rng(0).normal(size=(5, 32, 32, 3)).astype(np.float32)
    logits, relaxed, feature_logits, a = (np.asarray(o) for o in model(x, training=False))
    assert logits.shape == feature_logits.shape == (5, 6) and relaxed.shape == a.shape == (5, 12)
    np.testing.assert_allclose(relaxed, np.tanh(a), atol=1e-6)
    kernel, bias = model.get_layer("code_classifier").get_weights()
    np.testing.assert_allclose(logits, relaxed @ kernel + bias, rtol=1e-5, atol=1e-5)


# Every setting's bad values, refused with the message naming it: tests/methods/test_settings.py.


def test_config_round_trip_and_stage_boundaries():
    method = DFH(num_bits=24, feature_epochs=3, hash_loss="cross_entropy",
                 quantization="first_order", distillation_weight=0.5)
    again = DFH.from_config(method.config())
    assert again.config() == method.config()
    assert [method.stage(e) for e in range(5)] == [0, 0, 0, 1, 1]
    assert [DFH(feature_epochs=0).stage(e) for e in range(2)] == [1, 1]
    assert type(method).stage is not HashingMethod.stage


def _parts(method, model, images, labels):
    outputs = method.named_outputs(model(images, training=True))
    return outputs, {k: float(v) for k, v in method.loss_terms(model, outputs, labels).items()}


@pytest.mark.parametrize("hash_loss", ["metric", "cross_entropy"])
def test_stage_zero_trains_the_features_alone_and_stage_one_adds_every_term(hash_loss):
    method = DFH(num_bits=12, width_multiplier=WIDTH, feature_units=32, feature_epochs=1,
                 hash_loss=hash_loss, sign_weight=0.7, quantization_weight=0.3,
                 distillation_weight=0.2, temperature=2.0)
    model = method.build_model(4)
    rng = np.random.default_rng(1)
    images = rng.normal(size=(8, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])

    method.start_stage(model, 0)
    with tf.GradientTape() as tape:
        outputs = method.named_outputs(model(images, training=True))
        parts = method.loss_terms(model, outputs, labels)
        total = tf.add_n(list(parts.values()))
    assert set(parts) == set(LOSS_PARTS)
    assert {k: float(v) for k, v in parts.items() if k != "feature_classification"} == {
        "hash": 0.0, "sign": 0.0, "quantization": 0.0, "distillation": 0.0}
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(total, model.trainable_variables)))
    untouched = [p for p, g in grads.items() if g is None or not np.any(np.asarray(g))]
    assert sorted(untouched) == sorted(p for p in grads if p.split("/")[0] in (
        "hash_dense", "hash_bn", "code_classifier"))

    method.start_stage(model, 1)
    outputs, parts = _parts(method, model, images, labels)
    ce = lambda lg: float(tf.reduce_mean(  # noqa: E731
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=lg)))
    centers = losses.hash_centers(4, 12, 0)
    expected = {
        "feature_classification": ce(outputs["feature_logits"]),
        "hash": (float(losses.pair_loss(outputs["relaxed_codes"], labels, 0.5))
                 if hash_loss == "metric" else ce(outputs["logits"])),
        "sign": (0.7 * float(losses.sign_loss(outputs["hash_activations"], labels, centers))
                 if hash_loss == "metric" else 0.0),
        "quantization": 0.3 * float(np.mean((np.abs(outputs["relaxed_codes"]) - 1) ** 2)),
        "distillation": 0.2 * float(losses.distillation_loss(outputs["logits"],
                                                             outputs["feature_logits"], 2.0)),
    }
    # a second forward in training mode: batch statistics are the same, so are the parts
    assert parts == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert parts["hash"] > 0 and parts["quantization"] > 0 and parts["distillation"] > 0
