"""The DCBH loss and training-step hooks (everything else is shared)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common.method import HashingMethod, batch_mean, check_settings, sparse_cross_entropy
from common.layers.center_loss import REDUCTIONS as CENTER_REDUCTIONS
from common.regularization import (ORIGINAL_SCALE, WEIGHT_DECAY_MODES, decayed_kernels,
                                   weight_decay_loss)
from dcbh_tf.model import OUTPUT_NAMES, build_dcbh

QUANTIZATION_TARGET = 0.5


class DCBH(HashingMethod):
    """Deep Clustering and Block Hashing (Jang et al., ACCV 2018), as in the original code.

    cost = CE(logits) + CE(center_logits) + quantization_weight * mean|0.5 - |q||
           + center_weight * center + regularization

    Args:
        num_bits: bits per code.
        code_length: units per bit block.
        quantization_weight: weight of the quantization term (original 0.1).
        center_weight: weight of the center loss (original 1e-4).
        weight_decay: "original" (the double-applied, ineffective penalty), "l2"
            (the intended plain L2 of ``weight_decay_scale``, TF1 semantics) or "none".
        weight_decay_scale: L2 scale (original 2e-4).
        center_reduction: "sum" (original) or "mean" center loss.
        width_multiplier: backbone width (1.0 = original).
    """

    name = "dcbh"
    output_names = OUTPUT_NAMES

    def __init__(self, num_bits: int = 48, code_length: int = 6, quantization_weight: float = 0.1,
                 center_weight: float = 1e-4, weight_decay: str = "original",
                 weight_decay_scale: float = ORIGINAL_SCALE, center_reduction: str = "sum",
                 width_multiplier: float = 1.0):
        self.num_bits = num_bits
        self.code_length = code_length
        self.quantization_weight = quantization_weight
        self.center_weight = center_weight
        self.weight_decay = weight_decay
        self.weight_decay_scale = weight_decay_scale
        self.center_reduction = center_reduction
        self.width_multiplier = width_multiplier
        self._kernels = None
        self._check_settings()

    def _check_settings(self) -> None:
        check_settings([
            (self.num_bits >= 1, f"num_bits must be >= 1, got {self.num_bits}"),
            (self.code_length >= 1, f"code_length must be >= 1, got {self.code_length}"),
            (self.quantization_weight >= 0,
             f"quantization_weight must be >= 0, got {self.quantization_weight}"),
            (self.center_weight >= 0, f"center_weight must be >= 0, got {self.center_weight}"),
            (self.weight_decay in WEIGHT_DECAY_MODES,
             f"weight_decay must be one of {WEIGHT_DECAY_MODES}, got {self.weight_decay!r}"),
            (self.weight_decay_scale >= 0,
             f"weight_decay_scale must be >= 0, got {self.weight_decay_scale}"),
            (self.center_reduction in CENTER_REDUCTIONS,
             f"center_reduction must be one of {CENTER_REDUCTIONS}, got {self.center_reduction!r}"),
            (self.width_multiplier > 0,
             f"width_multiplier must be > 0, got {self.width_multiplier}"),
        ])

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
            "regularization": weight_decay_loss(kernels, self.weight_decay, self.weight_decay_scale),
        }

    def loss_reductions(self) -> dict[str, str]:
        return {"classification": "mean", "center_classification": "mean",
                "quantization": "mean", "center": self.center_reduction,
                "regularization": "none"}

    def before_optimizer_step(self, model, outputs, labels):
        model.get_layer("center_loss").apply_center_update(outputs["features"], labels)

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "num_bits": self.num_bits, "code_length": self.code_length,
                "quantization_weight": self.quantization_weight,
                "center_weight": self.center_weight, "weight_decay": self.weight_decay,
                "weight_decay_scale": self.weight_decay_scale,
                "center_reduction": self.center_reduction,
                "width_multiplier": self.width_multiplier}
