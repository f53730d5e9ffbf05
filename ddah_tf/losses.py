"""DDAH's loss terms as pure functions of tensors (the original's train.py constants as defaults).

Per pass (the original's ``criteria_softmax``)::

    loss_pass = NLL(log_softmax(logits), y)                       mean over the batch
                + 0.001 * mean_i sum_k | |h_ik| - 1 |             h: hash-layer output (pre-tanh)

Two objectives from the same forward pass (a: attended image, b: raw image)::

    loss_c = loss_a + loss_b                       trunk optimiser (optimizer_b)
    loss_s = max(0, m - loss_b + loss_a), m = 0    attention optimiser (optimizer_a)

but the attention side's gradient is d(loss_c + loss_s) / d(attention), not d loss_s
alone: the original calls ``loss_c.backward()`` (which also fills the attention weights'
gradients), steps and zeroes only the trunk optimiser, then ``loss_s.backward()`` adds
to the attention gradients before ``optimizer_a.step()``. Since loss_b does not depend
on the attention weights, that gradient is (1 + [m - loss_b + loss_a >= 0]) * d loss_a.
:func:`attention_objective` is that sum.

Weight decay is Adam's ``weight_decay=1e-4`` in PyTorch, coupled L2: ``grad += 1e-4 * w``
for every parameter of each optimiser (biases and BN gamma / beta included), before the
moment updates; :func:`l2_penalty` is the loss whose gradient is exactly that, and
:func:`add_coupled_weight_decay` the gradient form.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from common.methods.base import batch_mean, sparse_cross_entropy

QUANTIZATION_WEIGHT = 0.001    # train.py LOSS_01
MARGIN = 0.0                   # train.py m (a commented-out alternative: loss_a.detach() / 16)
WEIGHT_DECAY = 1e-4            # both Adams' weight_decay


def nll_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean over the batch of -log_softmax(logits)[label].

    The original's classifier ends in LogSoftmax and the loss is ``F.nll_loss(out, y)``
    (mean reduction; its ``.sum()`` of that scalar changes nothing): the softmax
    cross-entropy of the logits.
    """
    return sparse_cross_entropy(tf.reshape(labels, [-1]), logits)


def quantization_loss(hash_values: tf.Tensor,
                      weight: float = QUANTIZATION_WEIGHT) -> tf.Tensor:
    """weight * mean over samples of sum over bits of | |h| - 1 |.

    On the hash layer's output (the BN output before the classifier's tanh), summed over
    the bits (not averaged, unlike DDH's) and averaged over the batch.
    """
    h = tf.cast(hash_values, tf.float32)
    return weight * batch_mean(tf.reduce_sum(tf.abs(tf.abs(h) - 1.0), axis=-1))


def pass_loss(labels: tf.Tensor, logits: tf.Tensor, hash_values: tf.Tensor,
              quantization_weight: float = QUANTIZATION_WEIGHT) -> tf.Tensor:
    """One pass's loss, the original's ``criteria_softmax``: NLL + quantization."""
    return nll_loss(labels, logits) + quantization_loss(hash_values, quantization_weight)


def trunk_objective(loss_a: tf.Tensor, loss_b: tf.Tensor) -> tf.Tensor:
    """loss_c = loss_a + loss_b, minimised by the trunk (and it is what is logged)."""
    return loss_a + loss_b


def attention_hinge(loss_a: tf.Tensor, loss_b: tf.Tensor, margin: float = MARGIN) -> tf.Tensor:
    """loss_s = max(0, m - loss_b + loss_a): the attended pass should beat the raw one by m.

    ``torch.clamp(x, 0)`` passes the gradient where x >= 0 (x == 0 included);
    ``tf.maximum(x, 0)`` with x first does the same (TensorFlow's ReLU would not at 0).
    """
    return tf.maximum(margin - loss_b + loss_a, tf.zeros_like(loss_a))


def attention_objective(loss_a: tf.Tensor, loss_b: tf.Tensor,
                        margin: float = MARGIN) -> tf.Tensor:
    """loss_c + loss_s: the loss whose gradient the original's attention optimiser applies.

    Only its gradient with respect to the attention variables is meaningful (see the
    module docstring): (1 + [m - loss_b + loss_a >= 0]) * d loss_a / d attention.
    """
    return trunk_objective(loss_a, loss_b) + attention_hinge(loss_a, loss_b, margin)


def l2_penalty(variables: Sequence, rate: float = WEIGHT_DECAY) -> tf.Tensor:
    """rate / 2 * sum of w^2 over ``variables``; its gradient is rate * w (PyTorch's coupled
    Adam weight decay). Pass an optimiser's whole variable list (biases and BN included)."""
    total = tf.constant(0.0, tf.float32)
    for variable in variables:
        total += tf.reduce_sum(tf.square(tf.cast(variable, tf.float32)))
    return 0.5 * rate * total


def add_coupled_weight_decay(gradients: Sequence, variables: Sequence,
                             rate: float = WEIGHT_DECAY) -> list:
    """grad + rate * w for each pair, as PyTorch's Adam(weight_decay=rate) does first.

    A None gradient stays None (PyTorch's Adam skips parameters without a gradient).
    """
    if len(gradients) != len(variables):
        raise ValueError(f"{len(gradients)} gradients for {len(variables)} variables")
    return [None if g is None else g + rate * tf.cast(v, g.dtype)
            for g, v in zip(gradients, variables)]
