"""The DCBH block-hashing layer (the original ``Slice_Encode`` followed by ``tanh``)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="face_hashing")
class BlockHash(keras.layers.Layer):
    """Relaxed bits from blocks of a feature vector.

    The input is split into ``num_bits`` consecutive blocks of ``code_length`` units;
    each block gives one relaxed bit ``tanh(max(softmax(block)) - 0.5)``. The bit is
    positive iff one unit of the block holds more than half of its softmax mass, so
    a block "votes" for a single winner to switch its bit on.

    Args:
        num_bits: number of bits (blocks).
        code_length: units per block.

    Example:
        >>> layer = BlockHash(num_bits=48, code_length=6)
        >>> layer(keras.ops.zeros((2, 288))).shape
        (2, 48)
    """

    def __init__(self, num_bits: int, code_length: int, **kwargs):
        super().__init__(**kwargs)
        if num_bits < 1 or code_length < 1:
            raise ValueError(
                f"num_bits and code_length must be >= 1, got {num_bits}, {code_length}")
        self.num_bits = int(num_bits)
        self.code_length = int(code_length)

    def build(self, input_shape):
        width = input_shape[-1]
        if width is not None and width != self.num_bits * self.code_length:
            raise ValueError(
                f"BlockHash expects {self.num_bits} x {self.code_length} = "
                f"{self.num_bits * self.code_length} input units, got {width}")
        super().build(input_shape)

    def call(self, inputs):
        blocks = ops.reshape(inputs, (-1, self.num_bits, self.code_length))
        winner = ops.max(ops.softmax(blocks, axis=-1), axis=-1)
        return ops.tanh(winner - 0.5)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_bits)

    def get_config(self):
        config = super().get_config()
        config.update(num_bits=self.num_bits, code_length=self.code_length)
        return config
