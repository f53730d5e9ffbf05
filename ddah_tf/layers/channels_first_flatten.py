"""Flatten an NHWC map in PyTorch's (channel, row, column) order."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="face_hashing")
class ChannelsFirstFlatten(keras.layers.Layer):
    """(batch, H, W, C) -> (batch, C * H * W), channel-major as PyTorch's ``x.view(n, -1)``.

    The original flattens its NCHW maps before the channel-attention MLPs and the fusion
    Linear, so input unit ``c * H * W + h * W + w`` of those layers is pixel (h, w) of
    channel c. Keras' ``Flatten`` on NHWC gives ``(h * W + w) * C + c`` instead: the same
    function class (a permutation of the Linear's rows), but weights from a PyTorch
    checkpoint would need reordering. Flattening channel-major keeps them aligned (only
    the usual (out, in) -> (in, out) kernel transpose remains).

    Any rank >= 3 works: the last axis is moved to position 1, then everything is flattened.

    Args:
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> layer = ChannelsFirstFlatten()
        >>> layer(keras.ops.ones((2, 3, 3, 128))).shape
        TensorShape([2, 1152])
    """

    def call(self, inputs):
        rank = len(inputs.shape)
        if rank < 3:
            raise ValueError(f"ChannelsFirstFlatten needs rank >= 3 input, got rank {rank}")
        moved = ops.transpose(inputs, (0, rank - 1) + tuple(range(1, rank - 1)))
        return ops.reshape(moved, (-1, self._units(inputs.shape)))

    @staticmethod
    def _units(shape) -> int:
        units = 1
        for size in shape[1:]:
            if size is None:
                raise ValueError(f"ChannelsFirstFlatten needs known non-batch sizes, got {shape}")
            units *= int(size)
        return units

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._units(input_shape))

    def get_config(self):
        return super().get_config()
