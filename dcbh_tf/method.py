"""The DCBH loss and training-step hooks (everything else is shared)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common.methods.base import HashingMethod, batch_mean, sparse_cross_entropy
from common.models.regularization import decayed_kernels, weight_decay_loss
from dcbh_tf.model import OUTPUT_NAMES, build_dcbh
from dcbh_tf.settings import DCBHSettings

QUANTIZATION_TARGET = 0.5


class DCBH(HashingMethod):
    """Deep Clustering and Block Hashing (Jang et al., ACCV 2018), as in the original code.

    cost = CE(logits) + CE(center_logits) + quantization_weight * mean|0.5 - |q||
           + center_weight * center + regularization

    Settings: :class:`dcbh_tf.settings.DCBHSettings` (weight_decay "original" is the
    double-applied, ineffective penalty; "l2" the intended plain L2 of
    ``weight_decay_scale``, TF1 semantics; "none").
    """

    Settings = DCBHSettings
    output_names = OUTPUT_NAMES

    def __init__(self, settings: DCBHSettings | None = None, **values):
        super().__init__(settings, **values)
        self._kernels: list[Any] | None = None

    def build_model(self, num_classes: int) -> keras.Model:
        model = build_dcbh(num_classes, self.num_bits, self.code_length,
                           width_multiplier=self.width_multiplier,
                           center_reduction=self.center_reduction)
        self._kernels = decayed_kernels(model)
        return model

    def loss_terms(self, model, outputs, labels):
        center_layer = model.get_layer("center_loss")
        codes = outputs["relaxed_codes"]
        kernels = self._kernels if self._kernels is not None else decayed_kernels(model)
        return {
            "classification": sparse_cross_entropy(labels, outputs["logits"]),
            "center_classification": sparse_cross_entropy(labels, outputs["center_logits"]),
            "quantization": self.quantization_weight * batch_mean(
                tf.abs(QUANTIZATION_TARGET - tf.abs(codes))),
            "center": self.center_weight * center_layer.loss(outputs["features"], labels),
            "regularization": weight_decay_loss(kernels, self.weight_decay,
                                                self.weight_decay_scale),
        }

    def loss_reductions(self) -> dict[str, str]:
        return {"classification": "mean", "center_classification": "mean",
                "quantization": "mean", "center": self.center_reduction,
                "regularization": "none"}

    def before_optimizer_step(self, model, outputs, labels):
        model.get_layer("center_loss").apply_center_update(outputs["features"], labels)
