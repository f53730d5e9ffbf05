"""DFH as a shared-loop method: two stages, one Adam, the metric hash loss with sign
control, quadratic quantization and self-distillation."""

from __future__ import annotations

from typing import Any


import keras
import tensorflow as tf

from common.methods.base import HashingMethod, sparse_cross_entropy
from dfh_tf import losses
from dfh_tf.model import OUTPUT_NAMES, build_dfh
from dfh_tf.settings import DFHSettings

STAGES = ("features", "codes")
LOSS_PARTS = ("feature_classification", "hash", "sign", "quantization", "distillation")


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
        + distillation: distillation_weight * T^2 KL(feature classifier || code classifier),
          or with distillation="similarity" the squared differences of the codes' and the
          feature classifier's pairwise cosine similarities

    In stage 0 the other terms are computed and weighted by 0 (logged as 0). One Adam,
    the loop's constant rate. Codes: sign(relaxed_codes).

    Settings: :class:`dfh_tf.settings.DFHSettings` (feature_epochs: epochs of stage 0,
    0: the codes are trained from the start; pair_margin in Hamming distance / bits;
    distillation_weight 0: none, the ablation).
    """

    Settings = DFHSettings
    output_names = OUTPUT_NAMES

    def __init__(self, settings: DFHSettings | None = None, **values):
        super().__init__(settings, **values)
        self._codes_on: Any = None  # 0.0 in stage 0, 1.0 in stage 1 (built with the model)
        self._centers: Any = None

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
            "distillation": on * self.distillation_weight * self._distillation(outputs),
        }

    def _distillation(self, outputs) -> tf.Tensor:
        if self.distillation == "similarity":
            return losses.similarity_distillation_loss(outputs["relaxed_codes"],
                                                       outputs["feature_logits"])
        return losses.distillation_loss(outputs["logits"], outputs["feature_logits"],
                                        self.temperature)

    def loss_reductions(self) -> dict[str, str]:
        """Every part is a batch mean; the pair loss averages the pairs of each replica's
        share (pairs across replicas are not formed: README, "Several GPUs")."""
        return {k: "mean" for k in LOSS_PARTS}
