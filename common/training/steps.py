"""The training and test steps: one forward, the method's loss parts, the optimisers' updates.

Why a module of its own: the step is where a method meets the machinery (its forward,
:meth:`~common.methods.base.HashingMethod.loss_terms`, its optimiser groups, its state
update before the optimisers, a distribution's replicas); everything per epoch around it
is the same for every method. Each step returns a dict of named values::

    {"loss": cost, "parts": {part name: value, ...}, "correct": correct predictions,
     "images": batch size}         # the test step: without "images"

summed over the replicas under a distribution (each replica's parts are scaled so that the
sum is the global batch's, common.training.distribution.replica_loss_scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import tensorflow as tf

from common.methods.base import LOGITS, HashingMethod
from common.models.replica_ops import replica_sum
from common.training.distribution import replica_loss_scale
from common.training.optimizers import group_objective, optimizer_groups, with_coupled_decay
from common.training.sparse_gradients import ORIGINAL_SPARSE_ADAM, gradients_for_adam


@dataclass(frozen=True)
class Steps:
    """The traced steps of a run (see the module docstring for what they return)."""

    train_step: Callable[[Any, Any], dict]
    test_step: Callable[[Any, Any], dict]


def replica_scaled(method: HashingMethod, names: list[str], parts: list, labels) -> list:
    """The parts of one replica, scaled so that the replicas' sum is the global batch's."""
    reductions = method.loss_reductions()
    unnamed = [k for k in names if k not in reductions]
    if unnamed:
        raise ValueError(f"{method.name}.loss_reductions() does not name the loss parts "
                         f"{unnamed}: it cannot be trained with a distribution")
    local = tf.cast(tf.shape(labels)[0], tf.float32)
    total = replica_sum(local)
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    return [p * replica_loss_scale(reductions[k], local, total, replicas)
            for k, p in zip(names, parts)]


def make_steps(model, method: HashingMethod, optimizers: list, jit_compile: bool,
               sparse_adam: str = ORIGINAL_SPARSE_ADAM, strategy=None,
               batch_spec=None) -> Steps:
    """The train and test steps of ``method`` on ``model``.

    ``optimizers``: one per group of ``method.optimizer_groups(model)``, in that order.
    The train step runs one forward pass, computes every group's gradients from it, then
    applies them group after group (:class:`common.methods.base.OptimizerGroup`). With a
    distributing ``strategy`` it takes the distributed batch (``batch_spec``: its element
    spec) and sums the replicas' values; ``strategy`` None is one device.
    """
    groups = optimizer_groups(method, model)
    if len(optimizers) != len(groups):
        raise ValueError(f"{len(optimizers)} optimizers for the {len(groups)} optimizer groups "
                         f"of {method.name} ({[g.name for g in groups]})")
    distributed = strategy is not None
    plain = len(groups) == 1 and groups[0].is_plain(model)
    variables = model.trainable_variables

    def forward(images, labels, training):
        outputs = method.named_outputs(method.call_model(model, images, training))
        terms = method.loss_terms(model, outputs, labels)
        names = list(terms)
        parts = [tf.cast(v, tf.float32) for v in terms.values()]
        if distributed and training:
            parts = replica_scaled(method, names, parts, labels)
        loss = tf.add_n(parts)
        predicted = tf.argmax(outputs[LOGITS], axis=-1, output_type=tf.int64)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int64)),
                                        tf.float32))
        return outputs, loss, names, parts, {"loss": loss, "parts": dict(zip(names, parts)),
                                             "correct": correct}

    def one_optimizer(images, labels):
        optimizer = optimizers[0]
        with tf.GradientTape() as tape:
            outputs, loss, _, _, values = forward(images, labels, True)
            scaled = optimizer.scale_loss(loss)
        grads = gradients_for_adam(tape.gradient(scaled, variables), sparse_adam)
        # DCBH's direct center update comes before the optimizer step, as in the original.
        method.before_optimizer_step(model, outputs, labels)
        # Keras sums the replicas' gradients (each replica's loss is its share).
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return dict(values, images=tf.cast(tf.shape(labels)[0], tf.float32))

    def optimizer_groups_step(images, labels):
        """Several optimisers (or one with its own objective / decay): one forward, every
        group's gradients from it (the forward's weights), then the updates in order."""
        replicas = (tf.distribute.get_replica_context().num_replicas_in_sync
                    if distributed else 1)
        with tf.GradientTape(persistent=len(groups) > 1) as tape:
            outputs, loss, names, parts, values = forward(images, labels, True)
            objectives = [opt.scale_loss(group_objective(group, loss, names, parts, distributed))
                          for group, opt in zip(groups, optimizers)]
        grads = []
        for group, opt, objective in zip(groups, optimizers, objectives):
            group_grads = gradients_for_adam(tape.gradient(objective, list(group.variables)),
                                             sparse_adam)
            grads.append(with_coupled_decay(group, opt, group_grads, replicas))
        method.before_optimizer_step(model, outputs, labels)
        for group, opt, group_grads in zip(groups, optimizers, grads):
            pairs = [(g, v) for g, v in zip(group_grads, group.variables) if g is not None]
            if pairs:
                opt.apply_gradients(pairs)
        return dict(values, images=tf.cast(tf.shape(labels)[0], tf.float32))

    step = one_optimizer if plain else optimizer_groups_step
    if not distributed:
        train_step = tf.function(step, jit_compile=jit_compile, reduce_retracing=True)
    else:
        # One trace for every batch (the chunks' sizes unknown when tracing): replicas
        # traced with different sizes build different graphs whose collectives no
        # longer pair up.
        @tf.function(input_signature=list(batch_spec))
        def train_step(images, labels):
            per_replica = strategy.run(step, args=(images, labels))
            return tf.nest.map_structure(
                lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None),
                per_replica)

    @tf.function(reduce_retracing=True)
    def test_step(images, labels):
        return forward(images, labels, False)[-1]

    return Steps(train_step, test_step)
