"""Cross-replica arithmetic usable anywhere (layers, losses), without the training loop."""

from __future__ import annotations

import tensorflow as tf


def replica_sum(value: tf.Tensor) -> tf.Tensor:
    """Sum of ``value`` over the replicas of a tf.distribute step; ``value`` itself
    outside a step or with one replica (so single-device numbers are unchanged)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def replica_global(value: tf.Tensor) -> tf.Tensor:
    """``value`` summed over the replicas, differentiable with respect to this replica's own.

    For a loss non-linear in batch means (a hinge of two losses): each replica passes
    its share of the global-batch value (e.g. a batch mean weighted by its share of the
    batch); the result is the global value on every replica (exactly the all-reduced
    sum), and its gradient is 1 with respect to this replica's ``value`` (0 towards the
    others'), so f(result) on every replica, its gradients summed over the replicas (as
    the optimiser does), is the gradient of f at the global value. ``value`` itself
    outside a step or with one replica.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    total = tf.stop_gradient(replica_sum(value))
    return total + (value - tf.stop_gradient(value))
