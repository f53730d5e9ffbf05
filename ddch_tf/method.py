"""The DDCH loss and training-step hooks (everything else is shared with DCBH)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common.layers.center_loss import REDUCTIONS as CENTER_REDUCTIONS
from common.method import HashingMethod, batch_mean, check_settings, sparse_cross_entropy
from common.regularization import (ORIGINAL_SCALE, WEIGHT_DECAY_MODES, decayed_kernels,
                                   weight_decay_loss)
from ddch_tf.model import OUTPUT_NAMES, build_ddch


class DDCH(HashingMethod):
    """Deep Double Center Hashing (Fu, Wang, Tang, PRCV 2021); choices in ddch_tf/README.md.

    cost = CE(logits on the binary codes) + CE(feature_logits)
           + quantization_weight * mean((|relaxed| - 1)^2)
           + feature_center_weight * center(features) + code_center_weight * center(codes)
           + regularization

    Both center losses use the DCBH center layer: 0.5 * sum ||x - c_y||^2 over the batch,
    centers trainable and moved by the direct update before every optimizer step.

    Args:
        num_bits: bits per code.
        feature_units: width of the feature layer (feature centers).
        hash_hidden_units: hidden width of the hash function.
        quantization_weight: weight of the quantization term.
        feature_center_weight: weight of the feature center loss (DCBH's 1e-4).
        code_center_weight: weight of the code center loss.
        weight_decay: "original" (DCBH's ineffective penalty, the default so that the
            two methods differ only in their heads), "l2" or "none".
        weight_decay_scale: L2 scale.
        center_reduction: "sum" or "mean", both center losses.
        width_multiplier: backbone width (1.0 = DCBH's).
    """

    name = "ddch"
    output_names = OUTPUT_NAMES

    def __init__(self, num_bits: int = 48, feature_units: int = 512, hash_hidden_units: int = 512,
                 quantization_weight: float = 0.1, feature_center_weight: float = 1e-4,
                 code_center_weight: float = 1e-3, weight_decay: str = "original",
                 weight_decay_scale: float = ORIGINAL_SCALE, center_reduction: str = "sum",
                 width_multiplier: float = 1.0):
        self.num_bits = num_bits
        self.feature_units = feature_units
        self.hash_hidden_units = hash_hidden_units
        self.quantization_weight = quantization_weight
        self.feature_center_weight = feature_center_weight
        self.code_center_weight = code_center_weight
        self.weight_decay = weight_decay
        self.weight_decay_scale = weight_decay_scale
        self.center_reduction = center_reduction
        self.width_multiplier = width_multiplier
        self._kernels = None
        check_settings([
            (num_bits >= 1, f"num_bits must be >= 1, got {num_bits}"),
            (feature_units >= 1, f"feature_units must be >= 1, got {feature_units}"),
            (hash_hidden_units >= 1, f"hash_hidden_units must be >= 1, got {hash_hidden_units}"),
            (quantization_weight >= 0,
             f"quantization_weight must be >= 0, got {quantization_weight}"),
            (feature_center_weight >= 0,
             f"feature_center_weight must be >= 0, got {feature_center_weight}"),
            (code_center_weight >= 0, f"code_center_weight must be >= 0, got {code_center_weight}"),
            (weight_decay in WEIGHT_DECAY_MODES,
             f"weight_decay must be one of {WEIGHT_DECAY_MODES}, got {weight_decay!r}"),
            (weight_decay_scale >= 0, f"weight_decay_scale must be >= 0, got {weight_decay_scale}"),
            (center_reduction in CENTER_REDUCTIONS,
             f"center_reduction must be one of {CENTER_REDUCTIONS}, got {center_reduction!r}"),
            (width_multiplier > 0, f"width_multiplier must be > 0, got {width_multiplier}"),
        ])

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
            "regularization": weight_decay_loss(kernels, self.weight_decay, self.weight_decay_scale),
        }

    def loss_reductions(self) -> dict[str, str]:
        return {"classification": "mean", "feature_classification": "mean",
                "quantization": "mean", "feature_center": self.center_reduction,
                "code_center": self.center_reduction, "regularization": "none"}

    def before_optimizer_step(self, model, outputs, labels):
        model.get_layer("feature_center").apply_center_update(outputs["features"], labels)
        model.get_layer("code_center").apply_center_update(outputs["codes"], labels)

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "num_bits": self.num_bits,
                "feature_units": self.feature_units, "hash_hidden_units": self.hash_hidden_units,
                "quantization_weight": self.quantization_weight,
                "feature_center_weight": self.feature_center_weight,
                "code_center_weight": self.code_center_weight, "weight_decay": self.weight_decay,
                "weight_decay_scale": self.weight_decay_scale,
                "center_reduction": self.center_reduction,
                "width_multiplier": self.width_multiplier}
