"""Spatial attention on a feature map: one sigmoid weight per location, from channel pools."""

from __future__ import annotations

import keras
from keras import ops

from ddah_tf.torch_defaults import xavier_normal


@keras.saving.register_keras_serializable(package="face_hashing")
class SpatialGate(keras.layers.Layer):
    """Reweight the locations of a map by a sigmoid mask computed from its channel pools.

    The spatial stage of DAGH's attention cascade (dagh_tf/README.md). For a
    (batch, H, W, C) map x::

        pooled = concat[mean_c x, max_c x]                    (batch, H, W, 2)
        mask   = sigmoid(conv_{k x k, same}(pooled))          (batch, H, W, 1)
        out    = x * mask

    The pooled-descriptor form is CBAM's (Woo et al., ECCV 2018); the kernel is small
    because DAGH's maps are 3x3 and 2x2 (CBAM's 7x7 would be all padding). A sigmoid and
    not DDAH's min-max normalisation: on a 2x2 map min-max would zero one location in
    four for every image.

    Args:
        kernel_size: side of the conv on the pooled map, odd (default 3).
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> gate = SpatialGate()
        >>> gate(keras.ops.ones((2, 3, 3, 8))).shape
        TensorShape([2, 3, 3, 8])
        >>> gate.mask(keras.ops.ones((2, 3, 3, 8))).shape
        TensorShape([2, 3, 3, 1])
    """

    def __init__(self, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (centred 'same' padding), "
                             f"got {kernel_size}")
        self.kernel_size = int(kernel_size)
        self.conv = keras.layers.Conv2D(1, self.kernel_size, padding="same",
                                        kernel_initializer=xavier_normal(), name="mask_conv")

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError("SpatialGate needs (batch, height, width, channels) input with "
                             f"known channels, got {tuple(input_shape)}")
        self.conv.build((*input_shape[:3], 2))
        super().build(input_shape)

    def mask(self, inputs):
        """(batch, H, W, C) -> the location weights (batch, H, W, 1), in (0, 1)."""
        pooled = ops.concatenate([ops.mean(inputs, axis=-1, keepdims=True),
                                  ops.max(inputs, axis=-1, keepdims=True)], axis=-1)
        return ops.sigmoid(self.conv(pooled))

    def call(self, inputs):
        return inputs * self.mask(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size)
        return config
