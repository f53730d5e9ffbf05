"""The two layers DDH needs that Keras 3 does not have."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="face_hashing")
class LocallyConnected2D(keras.layers.Layer):
    """2-D convolution with unshared weights: every output position has its own kernel.

    Keras 2 had this layer (DDH's fourth layer); Keras 3 dropped it. Valid padding,
    stride 1. out[b, i, j, o] = sum_{di, dj, c} x[b, i+di, j+dj, c] * K[i*W'+j, (di, dj, c), o]
    + bias[i, j, o], with the patch flattened in (di, dj, c) order.

    Args:
        filters: output channels.
        kernel_size: int or (height, width) of each patch.
        use_bias: add a per-position bias (Keras 2's default: True).

    The kernel is He-uniform over each position's fan-in (kh * kw * channels), as DDH's
    ``init='he_uniform'`` gave it.

    Example:
        >>> layer = LocallyConnected2D(80, 2)
        >>> layer(keras.ops.ones((4, 3, 3, 60))).shape
        (4, 2, 2, 80)
    """

    def __init__(self, filters: int, kernel_size=2, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        if filters < 1:
            raise ValueError(f"filters must be >= 1, got {filters}")
        size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"kernel_size must be a positive int or pair, got {kernel_size}")
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in size)
        self.use_bias = bool(use_bias)

    def _output_hw(self, input_shape):
        h, w = int(input_shape[1]) - self.kernel_size[0] + 1, int(input_shape[2]) - self.kernel_size[1] + 1
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(input_shape[1:3])} is smaller than the kernel "
                             f"{self.kernel_size}")
        return h, w

    def build(self, input_shape):
        h, w = self._output_hw(input_shape)
        patch = self.kernel_size[0] * self.kernel_size[1] * int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(h * w, patch, self.filters),
                                      initializer=keras.initializers.RandomUniform(
                                          -(6.0 / patch) ** 0.5, (6.0 / patch) ** 0.5))
        self.bias = (self.add_weight(name="bias", shape=(h, w, self.filters), initializer="zeros")
                     if self.use_bias else None)
        super().build(input_shape)

    def call(self, inputs):
        kh, kw = self.kernel_size
        patches = tf.image.extract_patches(inputs, sizes=[1, kh, kw, 1], strides=[1, 1, 1, 1],
                                           rates=[1, 1, 1, 1], padding="VALID")
        h, w = self._output_hw(inputs.shape)
        patches = tf.reshape(patches, [-1, h * w, patches.shape[-1]])
        out = tf.einsum("bpk,pko->bpo", patches, tf.cast(self.kernel, patches.dtype))
        out = tf.reshape(out, [-1, h, w, self.filters])
        if self.use_bias:
            out = out + tf.cast(self.bias, out.dtype)
        return out

    def compute_output_shape(self, input_shape):
        h, w = self._output_hw(input_shape)
        return (input_shape[0], h, w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size),
                      use_bias=self.use_bias)
        return config


@keras.saving.register_keras_serializable(package="face_hashing")
class DivideAndEncode(keras.layers.Layer):
    """DDH's divide-and-encode module: bit i is a Dense(1) of its own slice of units.

    (batch, num_bits * split_num) -> (batch, num_bits),
    out[:, i] = sum_j x[:, i * split_num + j] * kernel[i, j] + bias[i].

    Args:
        num_bits: output bits.
        split_num: input units per bit (DDH: 4).

    Each bit's weights are Glorot-uniform over (split_num, 1), as its own Keras-1 Dense(1).

    Example:
        >>> DivideAndEncode(48, 4)(keras.ops.ones((2, 192))).shape
        (2, 48)
    """

    def __init__(self, num_bits: int, split_num: int = 4, **kwargs):
        super().__init__(**kwargs)
        if num_bits < 1 or split_num < 1:
            raise ValueError(f"num_bits and split_num must be >= 1, got {num_bits}, {split_num}")
        self.num_bits, self.split_num = int(num_bits), int(split_num)

    def build(self, input_shape):
        if int(input_shape[-1]) != self.num_bits * self.split_num:
            raise ValueError(f"expected {self.num_bits * self.split_num} input units "
                             f"({self.num_bits} bits x {self.split_num}), got {input_shape[-1]}")
        limit = (6.0 / (self.split_num + 1)) ** 0.5
        self.kernel = self.add_weight(name="kernel", shape=(self.num_bits, self.split_num),
                                      initializer=keras.initializers.RandomUniform(-limit, limit))
        self.bias = self.add_weight(name="bias", shape=(self.num_bits,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        x = tf.reshape(inputs, [-1, self.num_bits, self.split_num])
        return tf.reduce_sum(x * tf.cast(self.kernel, x.dtype), axis=-1) + tf.cast(self.bias,
                                                                                  x.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_bits)

    def get_config(self):
        config = super().get_config()
        config.update(num_bits=self.num_bits, split_num=self.split_num)
        return config
