"""DDAH's two gradients from one forward pass: a reference for the shared loop's step.

The original's step (train.py), in order::

    optimizer_a.zero_grad(); optimizer_b.zero_grad()
    hash_a, cls_a, hash_b, cls_b = net(imgs)              # one forward, training mode
    loss_a, loss_b = criteria_softmax(pass a), criteria_softmax(pass b)
    loss_c = loss_a + loss_b
    loss_c.backward(retain_graph=True)                    # trunk AND attention gradients
    optimizer_b.step()                                    # trunk update first
    optimizer_b.zero_grad()                               # zeroes the trunk's only
    loss_s = clamp(m - loss_b + loss_a, 0)
    loss_s.backward()                                     # adds to the attention's
    optimizer_a.step()                                    # attention update

This module computes both gradient lists from one tape before either update; the caller
applies the trunk's with one optimiser, then the attention's with the other. The one
difference: in the PyTorch of the time, the optimiser wrote the new trunk weights
through ``.data``, so ``loss_s.backward()`` back-propagated through the *updated* trunk
weights (with activations of the old ones); here all gradients use the weights of the
forward pass. (Later PyTorch refuses that second backward with an in-place error.)
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from ddah_tf import losses
from ddah_tf.model import OUTPUT_NAMES
from ddah_tf.variable_groups import attention_variables, trunk_variables


class DDAHGradients(NamedTuple):
    """Gradients (coupled weight decay included) and the step's loss values."""

    trunk: list            # (gradient, variable) pairs for the trunk optimiser
    attention: list        # (gradient, variable) pairs for the attention optimiser
    losses: dict           # loss_a, loss_b, loss_c (logged), loss_s, and their parts


def ddah_gradients(model: keras.Model, images: tf.Tensor, labels: tf.Tensor, *,
                   quantization_weight: float = losses.QUANTIZATION_WEIGHT,
                   margin: float = losses.MARGIN, weight_decay: float = losses.WEIGHT_DECAY,
                   include_skip_batchnorms: bool = False) -> DDAHGradients:
    """One training step's gradients as the original computes them (module docstring).

    trunk:     d loss_c / d trunk + weight_decay * w
    attention: d (loss_c + loss_s) / d attention + weight_decay * w
               = (1 + [m - loss_b + loss_a >= 0]) * d loss_a / d attention + weight_decay * w

    The forward runs in training mode: BN batch statistics, and the trunk's BN moving
    statistics updated twice, as in the original (Keras' graph runs pass b first, the
    original pass a; only the moving statistics, unused by the original, see the order).
    """
    trunk_vars = trunk_variables(model)
    attention_vars = attention_variables(model, include_skip_batchnorms)
    with tf.GradientTape(persistent=True) as tape:
        outputs = dict(zip(OUTPUT_NAMES, model(images, training=True)))
        parts = {
            "nll_a": losses.nll_loss(labels, outputs["logits"]),
            "quantization_a": losses.quantization_loss(outputs["relaxed_codes"],
                                                       quantization_weight),
            "nll_b": losses.nll_loss(labels, outputs["raw_logits"]),
            "quantization_b": losses.quantization_loss(outputs["raw_relaxed_codes"],
                                                       quantization_weight),
        }
        loss_a = parts["nll_a"] + parts["quantization_a"]
        loss_b = parts["nll_b"] + parts["quantization_b"]
        loss_c = losses.trunk_objective(loss_a, loss_b)
        loss_s = losses.attention_hinge(loss_a, loss_b, margin)
        attention_cost = loss_c + loss_s
    trunk_grads = losses.add_coupled_weight_decay(tape.gradient(loss_c, trunk_vars),
                                                  trunk_vars, weight_decay)
    attention_grads = losses.add_coupled_weight_decay(
        tape.gradient(attention_cost, attention_vars), attention_vars, weight_decay)
    del tape
    values = dict(parts, loss_a=loss_a, loss_b=loss_b, loss_c=loss_c, loss_s=loss_s)
    return DDAHGradients(list(zip(trunk_grads, trunk_vars)),
                         list(zip(attention_grads, attention_vars)), values)
