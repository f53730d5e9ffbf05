"""DAGH's discrete hash layer: binary codes forward, a documented surrogate gradient backward."""

from __future__ import annotations

import keras
import tensorflow as tf

from common.layers.straight_through_sign import straight_through_sign

BACKWARDS = ("identity", "clipped")


@keras.saving.register_keras_serializable(package="face_hashing")
class DiscreteHash(keras.layers.Layer):
    """b = sign(h) in the forward pass (0 -> +1), so every loss after it sees binary codes.

    sign has zero gradient almost everywhere, so the backward pass is modified:

    * ``"identity"`` (default): dL/dh = dL/db, the straight-through estimator as
      Greedy Hash (Su et al., NeurIPS 2018) uses it for a hash layer trained under
      the discrete constraint;
    * ``"clipped"``: dL/dh = dL/db * [|h| <= 1] (hard-tanh straight-through): no push
      on inputs already past +-1.

    Closed form (tested): for any upstream gradient g, identity gives g, clipped
    gives g * 1{|h| <= 1}. The forward value is exactly +-1 for every finite h.
    With ``binary=False`` (the ablation without the discrete layer) the layer is
    tanh(h), forward and backward.

    Args:
        backward: "identity" or "clipped".
        binary: False replaces the discrete layer by tanh (for the ablation).
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> DiscreteHash()(keras.ops.convert_to_tensor([[-0.3, 0.0, 2.0]]))
        [[-1., 1., 1.]]
    """

    def __init__(self, backward: str = "identity", binary: bool = True, **kwargs):
        super().__init__(**kwargs)
        if backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
        self.backward = backward
        self.binary = bool(binary)

    def call(self, inputs):
        if not self.binary:
            return tf.tanh(inputs)
        return straight_through_sign(inputs, clip_gradient=self.backward == "clipped")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(backward=self.backward, binary=self.binary)
        return config
