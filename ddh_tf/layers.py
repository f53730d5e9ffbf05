"""The two layers DDH needs that Keras 3 does not have.

Both are registered under the ``face_hashing`` package (so ``model.keras`` files load
once this module is imported) and list, through :meth:`decayed_kernels`, the weights the
original's ``W_regularizer=l2(...)`` covered: their kernels, not their biases.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


def keras1_he_uniform_limit(shape) -> float:
    """Bound of Keras 1's ``he_uniform`` for a kernel of ``shape``: sqrt(6 / fan_in).

    Keras 1 took fan_in = shape[0] for a matrix, the per-filter receptive field for a 4-D
    or 5-D conv kernel, and sqrt(prod(shape)) for any other rank, such as the 3-D kernel
    (positions, patch, filters) of its ``LocallyConnected2D``.

    Example:
        >>> round(keras1_he_uniform_limit((4, 240, 80)), 4)    # DDH's local4
        0.1471
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        fan_in = shape[0]
    elif len(shape) in (4, 5):
        fan_in = math.prod(shape[:-1])          # (..., in, out) layout
    else:
        fan_in = math.sqrt(math.prod(shape))
    return math.sqrt(6.0 / fan_in)


@keras.saving.register_keras_serializable(package="face_hashing")
class LocallyConnected2D(keras.layers.Layer):
    """2-D convolution with unshared weights: every output position has its own kernel.

    Keras 1 and 2 had this layer (DDH's fourth layer); Keras 3 dropped it. NHWC input,
    valid padding, stride 1; with output size (H', W') = (H - kh + 1, W - kw + 1)::

        out[b, i, j, o] = sum_{di, dj, c} x[b, i + di, j + dj, c] * kernel[i * W' + j, p, o]
                          + bias[i, j, o],     p = (di * kw + dj) * C + c

    i.e. the kernel is (H' * W', kh * kw * C, filters), each patch flattened in
    (row, column, channel) order, and the bias (H', W', filters): the weight layout of
    Keras 1/2's ``LocallyConnected2D`` with channels last.

    Args:
        filters: output channels.
        kernel_size: int or (height, width) of each patch.
        use_bias: add a per-position bias (Keras' default: True).
        kernel_initializer: a Keras initializer (name, config or instance) for the whole
            3-D kernel; None (default): He-uniform over each position's own fan-in
            kh * kw * C, i.e. uniform in +-sqrt(6 / (kh * kw * C)).
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> layer = LocallyConnected2D(80, 2)
        >>> layer(keras.ops.ones((4, 3, 3, 60))).shape
        TensorShape([4, 2, 2, 80])
        >>> layer.kernel.shape, layer.bias.shape
        ((4, 240, 80), (2, 2, 80))
    """

    def __init__(self, filters: int, kernel_size=2, use_bias: bool = True,
                 kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"filters must be >= 1, got {filters}")
        size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(size) != 2 or min(int(k) for k in size) < 1:
            raise ValueError(f"kernel_size must be a positive int or pair, got {kernel_size}")
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in size)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = (None if kernel_initializer is None
                                   else keras.initializers.get(kernel_initializer))
        self.kernel = None
        self.bias = None

    def _output_hw(self, input_shape) -> tuple[int, int]:
        if len(input_shape) != 4 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError("LocallyConnected2D needs (batch, height, width, channels) input "
                             f"with known height and width, got {tuple(input_shape)}")
        h = int(input_shape[1]) - self.kernel_size[0] + 1
        w = int(input_shape[2]) - self.kernel_size[1] + 1
        if h < 1 or w < 1:
            raise ValueError(f"input {tuple(input_shape[1:3])} is smaller than the kernel "
                             f"{self.kernel_size}")
        return h, w

    def build(self, input_shape):
        h, w = self._output_hw(input_shape)
        patch = self.kernel_size[0] * self.kernel_size[1] * int(input_shape[-1])
        initializer = self.kernel_initializer
        if initializer is None:
            limit = math.sqrt(6.0 / patch)
            initializer = keras.initializers.RandomUniform(-limit, limit)
        self.kernel = self.add_weight(name="kernel", shape=(h * w, patch, self.filters),
                                      initializer=initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(h, w, self.filters),
                                        initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        kh, kw = self.kernel_size
        h, w = self._output_hw(inputs.shape)
        patches = tf.image.extract_patches(inputs, sizes=[1, kh, kw, 1], strides=[1, 1, 1, 1],
                                           rates=[1, 1, 1, 1], padding="VALID")
        patches = tf.reshape(patches, [-1, h * w, patches.shape[-1]])   # (b, positions, patch)
        out = tf.einsum("bpk,pko->bpo", patches, tf.cast(self.kernel, patches.dtype))
        out = tf.reshape(out, [-1, h, w, self.filters])
        if self.use_bias:
            out = out + tf.cast(self.bias, out.dtype)
        return out

    def compute_output_shape(self, input_shape):
        h, w = self._output_hw(input_shape)
        return (input_shape[0], h, w, self.filters)

    def decayed_kernels(self) -> list:
        """The weights an L2 penalty on this layer covers: the kernel (not the bias)."""
        return [self.kernel]

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size),
                      use_bias=self.use_bias,
                      kernel_initializer=(None if self.kernel_initializer is None else
                                          keras.initializers.serialize(self.kernel_initializer)))
        return config


@keras.saving.register_keras_serializable(package="face_hashing")
class DivideAndEncode(keras.layers.Layer):
    """DDH's divide-and-encode module: bit i is a Dense(1) of its own slice of units.

    (batch, num_bits * split_num) -> (batch, num_bits)::

        out[:, i] = sum_j x[:, i * split_num + j] * kernel[i, j] + bias[i]

    The original built this from ``num_bits`` ``Lambda`` slices, each followed by its
    own ``Dense(1)``; this layer computes the same function with the same weights in one
    kernel (num_bits, split_num) and one bias (num_bits). Each row of the kernel is
    Glorot-uniform as its own Dense(1) was (fan_in split_num, fan_out 1), biases zero.

    Args:
        num_bits: output bits.
        split_num: input units per bit (DDH: 4).
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> layer = DivideAndEncode(48, 4)
        >>> layer(keras.ops.ones((2, 192))).shape
        TensorShape([2, 48])
        >>> layer.kernel.shape, layer.bias.shape
        ((48, 4), (48,))
    """

    def __init__(self, num_bits: int, split_num: int = 4, **kwargs):
        super().__init__(**kwargs)
        if int(num_bits) < 1:
            raise ValueError(f"num_bits must be >= 1, got {num_bits}")
        if int(split_num) < 1:
            raise ValueError(f"split_num must be >= 1, got {split_num}")
        self.num_bits, self.split_num = int(num_bits), int(split_num)
        self.kernel = None
        self.bias = None

    def build(self, input_shape):
        if input_shape[-1] is not None and int(input_shape[-1]) != self.num_bits * self.split_num:
            raise ValueError(f"expected {self.num_bits * self.split_num} input units "
                             f"({self.num_bits} bits x {self.split_num}), got {input_shape[-1]}")
        limit = math.sqrt(6.0 / (self.split_num + 1))
        self.kernel = self.add_weight(name="kernel", shape=(self.num_bits, self.split_num),
                                      initializer=keras.initializers.RandomUniform(-limit, limit))
        self.bias = self.add_weight(name="bias", shape=(self.num_bits,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        x = tf.reshape(inputs, [-1, self.num_bits, self.split_num])
        return (tf.reduce_sum(x * tf.cast(self.kernel, x.dtype), axis=-1)
                + tf.cast(self.bias, x.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_bits)

    def decayed_kernels(self) -> list:
        """The weights an L2 penalty on this layer covers: the kernel (not the bias)."""
        return [self.kernel]

    def get_config(self):
        config = super().get_config()
        config.update(num_bits=self.num_bits, split_num=self.split_num)
        return config
