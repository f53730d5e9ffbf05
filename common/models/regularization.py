"""Weight decay on conv / dense kernels, including the original's ineffective variant.

The original gives every conv and dense kernel an L2 regularizer of scale 2e-4 in TF1
semantics (penalty p = scale * sum(w^2) / 2), then passes those penalty scalars to
``apply_regularization`` a second time, so the cost receives sum_i scale * p_i^2 / 2:
effectively no weight decay. "original" reproduces that; "l2" is the intended plain
L2; "none" adds nothing.
"""

from __future__ import annotations

import keras
import tensorflow as tf

WEIGHT_DECAY_MODES = ("original", "l2", "none")
ORIGINAL_SCALE = 2e-4

_KERNEL_LAYERS = (keras.layers.Conv2D, keras.layers.Dense)


def decayed_kernels(model: keras.Model) -> list:
    """The kernels the original regularized: every Conv2D and Dense kernel."""
    return [layer.kernel for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, _KERNEL_LAYERS) and getattr(layer, "kernel", None) is not None]


def weight_decay_loss(kernels, mode: str = "original", scale: float = ORIGINAL_SCALE) -> tf.Tensor:
    """The regularization term added to the cost (float32 scalar)."""
    if mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight decay must be one of {WEIGHT_DECAY_MODES}, got {mode!r}")
    total = tf.constant(0.0, tf.float32)
    if mode == "none":
        return total
    for kernel in kernels:
        penalty = scale * tf.reduce_sum(tf.square(tf.cast(kernel, tf.float32))) / 2.0
        total += penalty if mode == "l2" else scale * tf.square(penalty) / 2.0
    return total
