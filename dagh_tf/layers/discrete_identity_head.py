"""Identity logits from Hamming similarities between a code and one binary center per identity."""

from __future__ import annotations

import keras
import tensorflow as tf

from common.layers.straight_through_sign import straight_through_sign


@keras.saving.register_keras_serializable(package="face_hashing")
class DiscreteIdentityHead(keras.layers.Layer):
    """logits_iy = scale * <b_i, sign(v_y)> / K: scaled Hamming similarity to identity centers.

    Each identity y owns a trainable real vector v_y (K = code length); its center is
    the binary code c_y = sign(v_y) (0 -> +1), with the straight-through gradient
    (identity) so that v_y learns. For binary codes b_i::

        <b_i, c_y> / K = 1 - 2 * hamming(b_i, c_y) / K

    so the logits rank identities exactly as the Hamming distance to their centers
    does, which is the distance retrieval uses. ``dagh_tf.losses.discrete_identity_loss``
    puts an additive margin on the true identity's similarity: minimising it pulls
    each code to its identity's center (compactness) and pushes it from every other
    center (separation).

    Args:
        num_classes: identities (centers).
        scale: s, the logits' scale (softmax temperature 1 / s).
        center_initializer: initializer of v (default Glorot uniform: random +-1
            centers whose signs can still flip early in training).
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> head = DiscreteIdentityHead(num_classes=4, scale=10.0)
        >>> head(keras.ops.ones((2, 12))).shape
        TensorShape([2, 4])
    """

    def __init__(self, num_classes: int, scale: float = 16.0,
                 center_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not float(scale) > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.num_classes = int(num_classes)
        self.scale = float(scale)
        self.center_initializer = keras.initializers.get(center_initializer)
        self.centers = None

    def build(self, input_shape):
        bits = input_shape[-1]
        if bits is None:
            raise ValueError(f"DiscreteIdentityHead needs a known code length, got {input_shape}")
        self.centers = self.add_weight(name="centers", shape=(self.num_classes, int(bits)),
                                       initializer=self.center_initializer, trainable=True)
        super().build(input_shape)

    def binary_centers(self):
        """The identities' codes sign(v) (classes, K), with the straight-through gradient."""
        return straight_through_sign(self.centers)

    def call(self, inputs):
        codes = tf.convert_to_tensor(inputs)
        centers = tf.cast(self.binary_centers(), codes.dtype)
        bits = tf.cast(tf.shape(codes)[-1], codes.dtype)
        return self.scale * tf.matmul(codes, centers, transpose_b=True) / bits

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, scale=self.scale,
                      center_initializer=keras.initializers.serialize(self.center_initializer))
        return config
