"""DDAH's channel attention: an MLP on the whole flattened map gives one weight per channel."""

from __future__ import annotations

import keras
from keras import ops

from ddah_tf.layers.channels_first_flatten import ChannelsFirstFlatten
from ddah_tf.layers.min_max_normalization import MinMaxNormalization
from ddah_tf.torch_defaults import xavier_normal


@keras.saving.register_keras_serializable(package="face_hashing")
class DDAHChannelAttention(keras.layers.Layer):
    """Reweight the channels of a map by min-max-normalised weights from an MLP.

    The original's ``global_avgpooling_3`` / ``global_avgpooling_4`` (despite the name, no
    pooling): for a (batch, H, W, C) map x::

        w = Linear(C)(ReLU(Linear(hidden_units)(flatten_channel_major(x))))   # (batch, C)
        w = (w - min_c w) / (max_c w - min_c w + epsilon)                      # per image
        out = x * w[:, None, None, :]

    Flattening is channel-major, as PyTorch's ``view(n, -1)`` of an NCHW map (see
    :class:`ChannelsFirstFlatten`). The min / max run over the C weights of each image;
    the original has no epsilon (``epsilon=0.0``), so per image the strongest channel is
    kept as is and the weakest is zeroed. Kernels are Xavier-normal and biases zero,
    the original's ``weights_init``. DDAH uses it twice, on the 3x3x128 map (MLP
    1152 -> 512 -> 128) and on the 2x2x256 map (1024 -> 512 -> 256).

    Args:
        hidden_units: width of the MLP's hidden layer (original 512).
        epsilon: added to (max - min) in the normalisation (original: none, 0.0).
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> layer = DDAHChannelAttention(hidden_units=512)
        >>> layer(keras.ops.ones((2, 3, 3, 128))).shape          # attended map
        TensorShape([2, 3, 3, 128])
        >>> layer.channel_weights(keras.ops.ones((2, 3, 3, 128))).shape
        TensorShape([2, 128])
    """

    def __init__(self, hidden_units: int = 512, epsilon: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if int(hidden_units) < 1:
            raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
        self.hidden_units = int(hidden_units)
        self.epsilon = float(epsilon)
        self.flatten = ChannelsFirstFlatten(name="flatten")
        self.hidden = keras.layers.Dense(self.hidden_units, activation="relu",
                                         kernel_initializer=xavier_normal(), name="hidden")
        self.output_dense = None                      # width = channels, known in build
        self.normalize = MinMaxNormalization(self.epsilon, name="normalize")

    def build(self, input_shape):
        if len(input_shape) != 4 or any(s is None for s in input_shape[1:]):
            raise ValueError("DDAHChannelAttention needs (batch, height, width, channels) input "
                             f"with known sizes, got {tuple(input_shape)}")
        channels = int(input_shape[-1])
        self.output_dense = keras.layers.Dense(channels, kernel_initializer=xavier_normal(),
                                               name="channel_logits")
        flat = self.flatten.compute_output_shape(input_shape)
        self.hidden.build(flat)
        self.output_dense.build((input_shape[0], self.hidden_units))
        super().build(input_shape)

    def channel_weights(self, inputs):
        """(batch, H, W, C) -> the normalised channel weights (batch, C), in [0, 1]."""
        return self.normalize(self.output_dense(self.hidden(self.flatten(inputs))))

    def call(self, inputs):
        weights = self.channel_weights(inputs)
        return inputs * ops.expand_dims(ops.expand_dims(weights, 1), 1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units, epsilon=self.epsilon)
        return config
