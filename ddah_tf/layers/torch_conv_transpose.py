"""A transposed convolution with PyTorch's ``padding`` / ``output_padding`` geometry."""

from __future__ import annotations

import keras
import tensorflow as tf

from ddah_tf.torch_defaults import xavier_normal


@keras.saving.register_keras_serializable(package="face_hashing")
class TorchConvTranspose2D(keras.layers.Layer):
    """``torch.nn.ConvTranspose2d`` on NHWC tensors, output aligned as PyTorch aligns it.

    Why not ``keras.layers.Conv2DTranspose``: DDAH's decoder uses ConvTranspose2d(kernel 3,
    stride 2, padding 1, output_padding 1), which doubles the size. Keras' ``padding="same"``
    also doubles it but places the kernel one pixel differently (TensorFlow pads the
    matching forward conv at the bottom / right only): PyTorch's output o is Keras' o + 1,
    so the decoder's skip additions would pair different pixels.
    Here, for input position i and kernel tap k (per spatial axis)::

        out[s * i + k - padding] += x[i] * kernel[k]      (no kernel flip)

    with output size (in - 1) * s - 2 * padding + k + output_padding; positions beyond the
    full (in - 1) * s + k (when output_padding > padding) receive the bias only, as in
    PyTorch. It is computed as a VALID transposed conv (out_full[s * i + k]), cropped by
    ``padding`` at the top / left and kept for the output size.

    The kernel is (kh, kw, filters, in_channels), TensorFlow's layout for
    ``conv2d_transpose`` (PyTorch's weight (in, out, kh, kw) transposed by (2, 3, 1, 0)).

    Args:
        filters: output channels.
        kernel_size: int, square kernel.
        strides: int, both axes.
        padding: int, PyTorch's ``padding`` (cropped from each side of the full output).
        output_padding: int, PyTorch's ``output_padding`` (extra rows / columns at the
            bottom / right); must be smaller than ``strides`` as in PyTorch.
        use_bias: add a per-channel bias.
        kernel_initializer: Keras initializer; None (default): ``xavier_normal``, the
            original's ``init.xavier_normal_``.
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> layer = TorchConvTranspose2D(64, kernel_size=3, strides=2, padding=1,
        ...                              output_padding=1)
        >>> layer(keras.ops.ones((2, 4, 4, 128))).shape
        TensorShape([2, 8, 8, 64])
    """

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 2, padding: int = 1,
                 output_padding: int = 1, use_bias: bool = True, kernel_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        checks = ((int(filters) >= 1, f"filters must be >= 1, got {filters}"),
                  (int(kernel_size) >= 1, f"kernel_size must be >= 1, got {kernel_size}"),
                  (int(strides) >= 1, f"strides must be >= 1, got {strides}"),
                  (int(padding) >= 0, f"padding must be >= 0, got {padding}"),
                  (0 <= int(output_padding) < int(strides),
                   f"output_padding must be in [0, strides), got {output_padding}"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.strides, self.padding = int(strides), int(padding)
        self.output_padding, self.use_bias = int(output_padding), bool(use_bias)
        self.kernel_initializer = (None if kernel_initializer is None
                                   else keras.initializers.get(kernel_initializer))
        self.kernel = None
        self.bias = None

    def _full_size(self, size: int) -> int:
        return (int(size) - 1) * self.strides + self.kernel_size

    def _output_size(self, size: int) -> int:
        out = self._full_size(size) - 2 * self.padding + self.output_padding
        if out < 1:
            raise ValueError(f"input size {size} gives an empty output")
        return out

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError("TorchConvTranspose2D needs (batch, height, width, channels) input "
                             f"with known channels, got {tuple(input_shape)}")
        initializer = self.kernel_initializer or xavier_normal()
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, self.kernel_size, self.filters,
                                  int(input_shape[-1])), initializer=initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape[1] is None or inputs.shape[2] is None:
            raise ValueError("TorchConvTranspose2D needs known height and width")
        height, width = int(inputs.shape[1]), int(inputs.shape[2])
        full_h, full_w = self._full_size(height), self._full_size(width)
        out_h, out_w = self._output_size(height), self._output_size(width)
        full = tf.nn.conv2d_transpose(
            inputs, tf.cast(self.kernel, inputs.dtype),
            output_shape=tf.stack([tf.shape(inputs)[0], full_h, full_w, self.filters]),
            strides=self.strides, padding="VALID")
        # Rows / columns past the full output (output_padding > padding) get no input.
        extra_h = max(0, self.padding + out_h - full_h)
        extra_w = max(0, self.padding + out_w - full_w)
        if extra_h or extra_w:
            full = tf.pad(full, [[0, 0], [0, extra_h], [0, extra_w], [0, 0]])
        out = full[:, self.padding:self.padding + out_h, self.padding:self.padding + out_w, :]
        if self.use_bias:
            out = out + tf.cast(self.bias, out.dtype)
        return out

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._output_size(input_shape[1]),
                self._output_size(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, output_padding=self.output_padding,
                      use_bias=self.use_bias,
                      kernel_initializer=(None if self.kernel_initializer is None else
                                          keras.initializers.serialize(self.kernel_initializer)))
        return config
