"""DAGH's loss terms as pure functions of tensors.

The discrete identity loss (dagh_tf/README.md): with b the binary code of image i
(forward values of the discrete hash layer), c_y the binary center of identity y and
K bits, the head's logits are s * <b_i, c_y> / K = s * (1 - 2 hamming(b_i, c_y) / K).
The loss is the softmax cross-entropy after subtracting an additive margin m from the
true identity's similarity::

    L_id = mean_i -log softmax(s * (<b_i, c_y>/K - m * [y = y_i]))[y_i]

It is small only when b_i is nearer (in Hamming distance) to its own center than to
every other one by a margin of m * K / 2 bits: compact identities, separated centers.
The quantization term is DDAH's: 0.001 * mean_i sum_k | |h_ik| - 1 | on the relaxed
codes h, which keeps h near +-1, where sign(h) and h (whose gradient the discrete
layer passes) agree.
"""

from __future__ import annotations

import tensorflow as tf

from common.methods.base import sparse_cross_entropy
from ddah_tf.losses import quantization_loss

__all__ = ["default_scale", "discrete_identity_loss", "quantization_loss", "MARGIN"]

BITS_PER_SCALE_UNIT = 3.0   # s = K / 3: one bit of Hamming distance moves a logit by 2/3
MARGIN = 0.2                # m, in units of normalised similarity (0.2 at 48 bits: 4.8 bits)


def default_scale(num_bits: int) -> float:
    """s = K / 3 (16 at 48 bits, 4 at 12): the logit step per bit, 2 s / K = 2/3, is the
    same at every code length. A fixed s = 16 made that step 2.7 at 12 bits, where the
    codes collapsed to one (LFW, mAP 0.008; dagh_tf/README.md, "The scale")."""
    return num_bits / BITS_PER_SCALE_UNIT


def discrete_identity_loss(labels: tf.Tensor, logits: tf.Tensor, scale: float,
                           margin: float = MARGIN) -> tf.Tensor:
    """Cross-entropy of ``logits`` (= s * similarity) with s * m taken off the true class.

    Args:
        labels: (batch,) integer identities.
        logits: (batch, classes) from :class:`dagh_tf.layers.DiscreteIdentityHead`.
        scale: the head's s (the margin is applied on the same scale).
        margin: m; 0 gives the plain cross-entropy of the logits.
    """
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    logits = tf.cast(logits, tf.float32)
    shifted = logits - scale * margin * tf.one_hot(labels, tf.shape(logits)[-1])
    return sparse_cross_entropy(labels, shifted)
