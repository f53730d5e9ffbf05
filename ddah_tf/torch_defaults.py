"""The PyTorch defaults the original DDAH relied on, spelled out for Keras.

The original (PyTorch, early 2019) initialises every ``Conv2d``, ``ConvTranspose2d`` and
``Linear`` weight with ``init.xavier_normal_`` and every bias with 0 (its
``weights_init``), and leaves ``BatchNorm`` at PyTorch's defaults. Keras' own defaults
differ (Glorot *truncated* normal / uniform, BN momentum 0.99, epsilon 1e-3), so the port
names them here instead of relying on a library default.
"""

from __future__ import annotations

import keras

# torch.nn.BatchNorm{1,2}d: running = (1 - 0.1) * running + 0.1 * batch, eps 1e-5.
# Keras' momentum is the weight of the old value: 1 - 0.1.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def xavier_normal() -> keras.initializers.Initializer:
    """``torch.nn.init.xavier_normal_`` (gain 1): N(0, 2 / (fan_in + fan_out)), not truncated.

    Keras' ``GlorotNormal`` draws from a *truncated* normal rescaled to the same variance;
    ``VarianceScaling(1, "fan_avg", "untruncated_normal")`` is PyTorch's distribution. The
    fans agree for every kernel here: Keras takes (kh * kw * in, kh * kw * out) for a conv
    kernel (kh, kw, in, out), PyTorch (in * kh * kw, out * kh * kw); for a transposed conv
    both swap in and out, which leaves fan_in + fan_out unchanged.

    A new instance per call: Keras warns when one unseeded initializer is reused.
    """
    return keras.initializers.VarianceScaling(scale=1.0, mode="fan_avg",
                                              distribution="untruncated_normal")


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """A BatchNormalization over the last axis with PyTorch's momentum and epsilon."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)
