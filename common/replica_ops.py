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
