"""Per-sample min-max rescaling to [0, 1], as DDAH normalises its attention weights."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="face_hashing")
class MinMaxNormalization(keras.layers.Layer):
    """Rescale each sample to [0, 1] over all of its non-batch axes.

    ``y = (x - min) / (max - min + epsilon)`` with min and max taken per sample over every
    axis but the batch axis. That is what the original does for both of its attentions:
    the spatial mask (batch, 1, H, W) is viewed as (batch, H * W) and rescaled per image
    (one min and one max per image, over all pixels), the channel weights (batch, C) per
    image over the C channels. The original adds **no** epsilon: a sample whose values are
    all equal gives 0 / 0 = NaN. ``epsilon=0.0`` (default) reproduces that; a small
    positive epsilon guards against it (and then the maximum maps to slightly below 1).

    Gradients: TensorFlow's min / max share the gradient equally among tied extremes,
    PyTorch's ``torch.min(dim)`` / ``torch.max(dim)`` send it to one of them. Ties of
    float activations are rare, so this is left as is.

    Args:
        epsilon: added to (max - min); 0.0 is the original's.
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> layer = MinMaxNormalization()
        >>> layer(keras.ops.convert_to_tensor([[1.0, 3.0, 2.0]]))    # -> [[0.0, 1.0, 0.5]]
    """

    def __init__(self, epsilon: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if float(epsilon) < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def call(self, inputs):
        axes = tuple(range(1, len(inputs.shape)))
        if not axes:
            raise ValueError("MinMaxNormalization needs a batch axis and at least one more")
        low = ops.min(inputs, axis=axes, keepdims=True)
        high = ops.max(inputs, axis=axes, keepdims=True)
        return (inputs - low) / (high - low + self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config
