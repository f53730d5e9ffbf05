"""Center loss with its per-class centers and the original's direct center update."""

from __future__ import annotations

import keras
import tensorflow as tf

from common.models.replica_ops import replica_sum

REDUCTIONS = ("sum", "mean")


@keras.saving.register_keras_serializable(package="face_hashing")
class CenterLoss(keras.layers.Layer):
    """Owns the class centers; passes its input through unchanged.

    Placing it in the functional graph (on the features it pulls together) makes the
    model track, save and restore the centers with every other weight, while
    inference ignores it. The training step calls :meth:`loss` and
    :meth:`apply_center_update`.

    * loss = 0.5 * sum over the batch of ||f_i - c_{y_i}||^2 (``reduction="sum"``, as
      in the original), or that sum divided by the batch size (``"mean"``).
    * direct update, applied every step before the optimizer's:
      c_y -= sum_{i: y_i = y} (c_y - f_i) / (1 + n_y), n_y = count of y in the batch
      (the original's ``scatter_sub``, which accumulates over repeated labels).
    * the centers are also trainable (Glorot-uniform init), so the optimizer moves
      them along the loss gradient too, as in the original.

    Args:
        num_classes: number of classes (rows of the centers).
        reduction: "sum" (original) or "mean" over the batch.
        trainable_centers: let the optimizer update the centers (original: True).

    Example:
        >>> layer = CenterLoss(num_classes=10)
        >>> features = layer(keras.ops.ones((4, 8)))      # identity
        >>> loss = layer.loss(features, keras.ops.convert_to_tensor([0, 1, 1, 3]))
    """

    def __init__(self, num_classes: int, reduction: str = "sum", trainable_centers: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.num_classes = int(num_classes)
        self.reduction = reduction
        self.trainable_centers = bool(trainable_centers)

    def build(self, input_shape):
        self.centers = self.add_weight(
            name="centers", shape=(self.num_classes, int(input_shape[-1])),
            initializer="glorot_uniform", trainable=self.trainable_centers,
            # replicas apply the same (all-reduced) direct update: take it once
            aggregation="only_first_replica")
        super().build(input_shape)

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def loss(self, features, labels):
        """Center loss of a batch (scalar)."""
        features = tf.convert_to_tensor(features)
        centers = tf.cast(tf.convert_to_tensor(self.centers), features.dtype)
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)   # (batch,) or (batch, 1)
        diff = features - tf.gather(centers, labels)
        total = 0.5 * tf.reduce_sum(tf.square(diff))
        if self.reduction == "mean":  # 0 for an empty batch (a replica may get none)
            total = tf.math.divide_no_nan(total, tf.cast(tf.shape(features)[0], total.dtype))
        return total

    def center_update(self, features, labels):
        """The amount the direct update subtracts from the centers, (num_classes, dim).

        Under tf.distribute the counts and the sums are those of the global batch
        (all-reduced over the replicas), so every replica computes the single-device
        update; without replicas both all-reduces are the identity.
        """
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        features = tf.cast(tf.stop_gradient(features), self.centers.dtype)
        centers = tf.convert_to_tensor(self.centers)
        counts = replica_sum(tf.math.bincount(labels, minlength=self.num_classes,
                                              maxlength=self.num_classes, dtype=centers.dtype))
        diff = (tf.gather(centers, labels) - features) / (1.0 + tf.gather(counts, labels))[:, None]
        return replica_sum(tf.math.unsorted_segment_sum(diff, labels, self.num_classes))

    def apply_center_update(self, features, labels):
        """Apply the direct update to the centers (call before the optimizer step)."""
        self.centers.assign_sub(self.center_update(features, labels))

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, reduction=self.reduction,
                      trainable_centers=self.trainable_centers)
        return config
