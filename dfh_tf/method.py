"""DFH as a shared-loop method: two stages, one Adam, the metric hash loss with sign
control, quadratic quantization and self-distillation."""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from common.method import (HashingMethod, check_settings, is_integer, is_real,
                           sparse_cross_entropy)
from dfh_tf import losses
from dfh_tf.model import OUTPUT_NAMES, build_dfh

HASH_LOSSES = ("metric", "cross_entropy")
STAGES = ("features", "codes")
LOSS_PARTS = ("feature_classification", "hash", "sign", "quantization", "distillation")


def _finite(value) -> bool:
    return is_real(value) and math.isfinite(value)


class DFH(HashingMethod):
    """Deep Face Images Hashing (Wang, 2021 thesis), built from its abstract (every choice
    and why: dfh_tf/README.md).

    Stage 0, "features" (epochs 1..feature_epochs): the feature classifier's
    cross-entropy alone; the network learns face features before anything is compressed.
    Stage 1, "codes" (the rest):

        feature_classification (CE of the feature classifier, the teacher, kept supervised)
        + hash: pair_loss (DSH's margin contrastive loss on the relaxed codes), or with
          hash_loss="cross_entropy" the code classifier's CE (the ablation)
        + sign: sign_weight * CSQ's per-bit cross-entropy to the identity's hash center
          (metric only)
        + quantization: quantization_weight * mean (|h| - 1)^2 (or | |h| - 1 |)
        + distillation: distillation_weight * T^2 KL(feature classifier || code classifier)

    In stage 0 the other terms are computed and weighted by 0 (logged as 0). One Adam,
    the loop's constant rate. Codes: sign(relaxed_codes).

    Args:
        num_bits: code length.
        width_multiplier: backbone width (1.0 = DCBH's).
        feature_units: width of the feature layer.
        feature_epochs: epochs of stage 0 (0: the codes are trained from the start).
        hash_loss: "metric" (DFH) or "cross_entropy" (ablation).
        pair_margin: margin of the pair loss, in Hamming distance / bits.
        sign_weight: weight of the sign term (metric only).
        quantization: "quadratic" (DFH) or "first_order" (ablation).
        quantization_weight: its weight.
        distillation_weight: weight of the distillation (0: none, the ablation).
        temperature: T of the distillation.
        center_seed: seed of the identity hash centers.
    """

    name = "dfh"
    output_names = OUTPUT_NAMES

    def __init__(self, num_bits: int = 48, width_multiplier: float = 1.0,
                 feature_units: int = 512, feature_epochs: int = 50,
                 hash_loss: str = "metric", pair_margin: float = losses.PAIR_MARGIN,
                 sign_weight: float = 1.0, quantization: str = "quadratic",
                 quantization_weight: float = 0.1, distillation_weight: float = 1.0,
                 temperature: float = losses.TEMPERATURE, center_seed: int = 0):
        self.num_bits, self.width_multiplier = num_bits, width_multiplier
        self.feature_units, self.feature_epochs = feature_units, feature_epochs
        self.hash_loss, self.pair_margin, self.sign_weight = hash_loss, pair_margin, sign_weight
        self.quantization, self.quantization_weight = quantization, quantization_weight
        self.distillation_weight, self.temperature = distillation_weight, temperature
        self.center_seed = center_seed
        check_settings([
            (is_integer(num_bits) and num_bits >= 1, f"num_bits must be >= 1, got {num_bits}"),
            (_finite(width_multiplier) and width_multiplier > 0,
             f"width_multiplier must be > 0, got {width_multiplier}"),
            (is_integer(feature_units) and feature_units >= 1,
             f"feature_units must be >= 1, got {feature_units}"),
            (is_integer(feature_epochs) and feature_epochs >= 0,
             f"feature_epochs must be an integer >= 0, got {feature_epochs}"),
            (hash_loss in HASH_LOSSES, f"hash_loss must be one of {HASH_LOSSES}, got {hash_loss!r}"),
            (_finite(pair_margin) and 0 < pair_margin <= 1,
             f"pair_margin must be in (0, 1], got {pair_margin}"),
            (_finite(sign_weight) and sign_weight >= 0, f"sign_weight must be >= 0, got {sign_weight}"),
            (quantization in losses.QUANTIZATIONS,
             f"quantization must be one of {losses.QUANTIZATIONS}, got {quantization!r}"),
            (_finite(quantization_weight) and quantization_weight >= 0,
             f"quantization_weight must be >= 0, got {quantization_weight}"),
            (_finite(distillation_weight) and distillation_weight >= 0,
             f"distillation_weight must be >= 0, got {distillation_weight}"),
            (_finite(temperature) and temperature > 0, f"temperature must be > 0, got {temperature}"),
            (is_integer(center_seed) and center_seed >= 0,
             f"center_seed must be an integer >= 0, got {center_seed}"),
        ])
        self.num_bits, self.feature_units = int(num_bits), int(feature_units)
        self.feature_epochs, self.center_seed = int(feature_epochs), int(center_seed)
        self._codes_on = None  # 0.0 in stage 0, 1.0 in stage 1 (built with the model)
        self._centers = None

    def build_model(self, num_classes: int) -> keras.Model:
        model = build_dfh(num_classes, self.num_bits, self.feature_units, self.width_multiplier)
        # Created here, inside the distribution scope when there is one; set before every
        # epoch by start_stage, so it never needs a checkpoint.
        self._codes_on = tf.Variable(1.0 if self.feature_epochs == 0 else 0.0,
                                     trainable=False, name="dfh_codes_stage",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self._centers = tf.constant(losses.hash_centers(num_classes, self.num_bits,
                                                        self.center_seed), tf.float32)
        return model

    def stage(self, epoch: int) -> int:
        """0 ("features") for the first ``feature_epochs`` epochs, then 1 ("codes")."""
        return 0 if epoch < self.feature_epochs else 1

    def start_stage(self, model, stage: int) -> None:
        del model
        self._codes_on.assign(1.0 if stage else 0.0)

    def loss_terms(self, model, outputs, labels):
        del model
        on = tf.convert_to_tensor(self._codes_on)
        codes = outputs["relaxed_codes"]
        zero = tf.zeros([], tf.float32)
        if self.hash_loss == "metric":
            hash_term = losses.pair_loss(codes, labels, self.pair_margin)
            sign = self.sign_weight * losses.sign_loss(outputs["hash_activations"], labels,
                                                       self._centers)
        else:
            hash_term, sign = sparse_cross_entropy(labels, outputs["logits"]), zero
        return {
            "feature_classification": sparse_cross_entropy(labels, outputs["feature_logits"]),
            "hash": on * hash_term,
            "sign": on * sign,
            "quantization": on * self.quantization_weight * losses.quantization_loss(
                codes, self.quantization),
            "distillation": on * self.distillation_weight * losses.distillation_loss(
                outputs["logits"], outputs["feature_logits"], self.temperature),
        }

    def loss_reductions(self) -> dict[str, str]:
        """Every part is a batch mean; the pair loss averages the pairs of each replica's
        share (pairs across replicas are not formed: README, "Several GPUs")."""
        return {k: "mean" for k in LOSS_PARTS}

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "num_bits": self.num_bits,
                "width_multiplier": self.width_multiplier, "feature_units": self.feature_units,
                "feature_epochs": self.feature_epochs, "hash_loss": self.hash_loss,
                "pair_margin": self.pair_margin, "sign_weight": self.sign_weight,
                "quantization": self.quantization,
                "quantization_weight": self.quantization_weight,
                "distillation_weight": self.distillation_weight,
                "temperature": self.temperature, "center_seed": self.center_seed}
