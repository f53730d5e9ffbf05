"""The DDH loss (everything else is shared)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common.methods.base import HashingMethod, batch_mean, sparse_cross_entropy
from common.models.regularization import weight_decay_loss
from ddh_tf.model import OUTPUT_NAMES, build_ddh
from ddh_tf.settings import DDHSettings


def ddh_kernels(model: keras.Model) -> list:
    """The kernels the original gave ``W_regularizer=l2(...)``: the three convs, the locally
    connected layer, the face-feature Dense, the divide-and-encode units and the softmax
    Dense; no bias, no BN parameter. A layer that lists its own (``decayed_kernels()``,
    as DDH's custom layers do) is asked; any other Conv2D / Dense gives its kernel."""
    kernels = []
    for layer in model._flatten_layers(include_self=False):
        if hasattr(layer, "decayed_kernels"):
            kernels.extend(layer.decayed_kernels())
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernels.append(layer.kernel)
    return kernels


class DDH(HashingMethod):
    """Discriminative Deep Hashing (Lin, Li, Tang, IJCAI 2017), as the authors' code.

    cost = CE(logits) + quantization_weight * mean(| |h| - 1 |)
           + weight_decay_scale * sum(w^2) over :func:`ddh_kernels` (Keras-1 l2 semantics)

    h are the relaxed (tanh) codes; the mean runs over batch and bits, as the original's
    per-example ``loss_01`` averaged by Keras over the batch. No state outside the
    optimizer: :meth:`before_optimizer_step` is the base class's no-op.

    Settings: :class:`ddh_tf.settings.DDHSettings` (weight_decay_scale is the Keras-1
    ``l2(c)`` coefficient c, original 1e-4).
    """

    Settings = DDHSettings
    output_names = OUTPUT_NAMES

    def __init__(self, settings: DDHSettings | None = None, **values):
        super().__init__(settings, **values)
        self._model = None
        self._kernels: list[Any] | None = None

    def build_model(self, num_classes: int) -> keras.Model:
        model = build_ddh(num_classes, self.num_bits, self.split_num)
        self._model, self._kernels = model, ddh_kernels(model)
        return model

    def loss_terms(self, model, outputs, labels):
        codes = outputs["relaxed_codes"]
        kernels = self._kernels if model is self._model else ddh_kernels(model)
        # Keras-1 l2(c) adds c * sum(w^2); common's "l2" is TF1's scale * sum(w^2) / 2.
        return {
            "classification": sparse_cross_entropy(labels, outputs["logits"]),
            "quantization": self.quantization_weight * batch_mean(
                tf.abs(tf.abs(codes) - 1.0)),
            "regularization": weight_decay_loss(kernels, self.weight_decay,
                                                2.0 * self.weight_decay_scale),
        }

    def loss_reductions(self) -> dict[str, str]:
        return {"classification": "mean", "quantization": "mean", "regularization": "none"}

    def before_optimizer_step(self, model, outputs, labels):
        """Nothing: DDH keeps no state outside the optimizer (no centers)."""
        # A body of its own: AutoGraph cannot convert the base class's docstring-only one.
        del model, outputs, labels
