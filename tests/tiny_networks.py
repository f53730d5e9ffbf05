"""Helpers for the tests that build small hashing networks and check them against numpy:
tensors as arrays, weight counts, test images, non-trivial batch norms, the graph's
wiring, one checked loss gradient, and the conv blocks of the backbone that DCBH and DDCH
share (common/models/backbone.py). The model, layer and loss tests of several methods each kept
their own copy of these."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# The backbone's ten 3x3 conv blocks at width 1, in order (../shared/reference/original_dcbh.md).
CONV_FILTERS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512)
CONV_NAMES = ("block1_1", "block1_2", "block2_1", "block2_2", "block3_1", "block3_2", "block3_3",
              "block4_1", "block4_2", "block4_3")

BATCH = 6   # the batch of ``images`` unless told otherwise


def arr(x, dtype=None) -> np.ndarray:
    """Tensor / variable -> numpy (via .numpy(), avoiding numpy 2's __array__ warning)."""
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype)


def count(weights) -> int:
    """How many numbers the variables ``weights`` hold together."""
    return sum(int(np.prod(w.shape)) for w in weights)


def images(seed: int = 0, n: int = BATCH) -> np.ndarray:
    """``n`` 32x32 RGB float32 images in [-1, 1]: normal noise (std 0.5), clipped."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(scale=0.5, size=(n, 32, 32, 3)), -1, 1).astype(np.float32)


def randomize_batchnorms(layer, rng: np.random.Generator, std: float = 0.1,
                         max_variance: float = 1.5) -> None:
    """Non-trivial parameters and moving statistics for every BatchNormalization in
    ``layer`` (a model or a layer, nested ones included), so that BN's role shows: gamma
    uniform in [0.5, 1.5], beta and the moving mean normal with standard deviation ``std``,
    the moving variance uniform in [0.5, ``max_variance``]; drawn from ``rng`` layer by
    layer, in that order."""
    for bn in layer._flatten_layers(include_self=False):
        if isinstance(bn, keras.layers.BatchNormalization):
            n = bn.gamma.shape[0]
            bn.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            bn.beta.assign(rng.normal(scale=std, size=n).astype(np.float32))
            bn.moving_mean.assign(rng.normal(scale=std, size=n).astype(np.float32))
            bn.moving_variance.assign(rng.uniform(0.5, max_variance, n).astype(np.float32))


def inbound(model, name: str) -> list[str]:
    """Names of the layers whose outputs feed layer ``name`` of ``model`` (first call)."""
    layer = model.get_layer(name)
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    by_output = {id(l.output): l.name for l in model.layers}
    return [by_output[id(t)] for t in inputs]


def checked_gradients(method, model, x, labels):
    """One training-mode pass of images ``x`` through ``model`` and the gradient of the sum
    of ``method``'s loss terms for ``labels`` with respect to every trainable weight,
    after asserting that the loss is finite and that each weight's gradient exists and
    is not all zero. Returns (named outputs, trainable weights, their gradients)."""
    labels = tf.constant(labels)
    with tf.GradientTape() as tape:
        outputs = method.named_outputs(model(x, training=True))
        total = tf.add_n(list(method.loss_terms(model, outputs, labels).values()))
    weights = model.trainable_weights
    grads = tape.gradient(total, weights)
    assert np.isfinite(float(total))
    missing = [w.path for w, g in zip(weights, grads) if g is None]
    assert not missing, missing
    zero = [w.path for w, g in zip(weights, grads)
            if not np.any(arr(tf.convert_to_tensor(g)) != 0)]
    assert not zero, zero
    return outputs, weights, grads
