"""The DDCH loss and training-step hooks (everything else is shared with DCBH)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common.methods.base import HashingMethod, batch_mean, sparse_cross_entropy
from common.models.regularization import decayed_kernels, weight_decay_loss
from ddch_tf.model import OUTPUT_NAMES, build_ddch
from ddch_tf.settings import DDCHSettings


class DDCH(HashingMethod):
    """Deep Double Center Hashing (Fu, Wang, Tang, PRCV 2021); choices in ddch_tf/README.md.

    cost = CE(logits on the binary codes) + CE(feature_logits)
           + quantization_weight * mean((|relaxed| - 1)^2)
           + feature_center_weight * center(features) + code_center_weight * center(codes)
           + regularization

    Both center losses use the DCBH center layer: 0.5 * sum ||x - c_y||^2 over the batch,
    centers trainable and moved by the direct update before every optimizer step.

    Settings: :class:`ddch_tf.settings.DDCHSettings`.
    """

    Settings = DDCHSettings
    output_names = OUTPUT_NAMES

    def __init__(self, settings: DDCHSettings | None = None, **values):
        super().__init__(settings, **values)
        self._kernels: list[Any] | None = None

    def build_model(self, num_classes: int) -> keras.Model:
        model = build_ddch(num_classes, self.num_bits, self.feature_units, self.hash_hidden_units,
                           width_multiplier=self.width_multiplier,
                           center_reduction=self.center_reduction)
        self._kernels = decayed_kernels(model)
        return model

    def loss_terms(self, model, outputs, labels):
        relaxed = outputs["relaxed_codes"]
        kernels = self._kernels if self._kernels is not None else decayed_kernels(model)
        return {
            "classification": sparse_cross_entropy(labels, outputs["logits"]),
            "feature_classification": sparse_cross_entropy(labels, outputs["feature_logits"]),
            "quantization": self.quantization_weight * batch_mean(
                tf.square(tf.abs(relaxed) - 1.0)),
            "feature_center": self.feature_center_weight * model.get_layer(
                "feature_center").loss(outputs["features"], labels),
            "code_center": self.code_center_weight * model.get_layer("code_center").loss(
                outputs["codes"], labels),
            "regularization": weight_decay_loss(kernels, self.weight_decay,
                                                self.weight_decay_scale),
        }

    def loss_reductions(self) -> dict[str, str]:
        return {"classification": "mean", "feature_classification": "mean",
                "quantization": "mean", "feature_center": self.center_reduction,
                "code_center": self.center_reduction, "regularization": "none"}

    def before_optimizer_step(self, model, outputs, labels):
        model.get_layer("feature_center").apply_center_update(outputs["features"], labels)
        model.get_layer("code_center").apply_center_update(outputs["codes"], labels)
