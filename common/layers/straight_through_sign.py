"""Binary codes in the forward pass with a straight-through gradient."""

from __future__ import annotations

import keras
import tensorflow as tf


def straight_through_sign(inputs, clip_gradient: bool = False) -> tf.Tensor:
    """sign(x) with 0 -> +1 forward; gradient 1 (or 1{|x| <= 1} with ``clip_gradient``).

    The function behind :class:`StraightThroughSign`, for layers that binarise a tensor
    inside their own computation (DAGH's discrete hash layer and identity centers).
    """
    inputs = tf.convert_to_tensor(inputs)
    binary = tf.where(inputs >= 0, tf.ones_like(inputs), -tf.ones_like(inputs))
    through = inputs
    if clip_gradient:
        through = inputs * tf.cast(tf.abs(inputs) <= 1, inputs.dtype)
    # Forward value: binary (exactly: through - stop_gradient(through) is 0 for any
    # finite input, whereas through + (binary - through) cancels to 0 for large |x|,
    # e.g. 1e8 in float32).
    # Gradient: d(through)/dx.
    return binary + (through - tf.stop_gradient(through))


@keras.saving.register_keras_serializable(package="face_hashing")
class StraightThroughSign(keras.layers.Layer):
    """``sign(x)`` with 0 -> +1 forward; the gradient passes straight through.

    The backward pass is the identity (the straight-through estimator of Bengio et
    al., 2013). With ``clip_gradient=True`` it is the identity only where |x| <= 1 and
    zero elsewhere (the "hard-tanh" variant), which stops pushing inputs that are
    already far past the threshold. Default: unclipped.

    Args:
        clip_gradient: zero the gradient where |x| > 1.

    Example:
        >>> StraightThroughSign()(keras.ops.convert_to_tensor([[-0.3, 0.0, 2.0]]))
        [[-1., 1., 1.]]
    """

    def __init__(self, clip_gradient: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.clip_gradient = bool(clip_gradient)

    def call(self, inputs):
        return straight_through_sign(inputs, self.clip_gradient)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(clip_gradient=self.clip_gradient)
        return config
