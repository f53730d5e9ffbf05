"""DDAH as a shared-loop method: two optimisers, a hinge between the passes, a schedule."""

from __future__ import annotations

from typing import Any

import keras

from common.methods.base import HashingMethod, OptimizerGroup
from ddah_tf import losses, schedule
from ddah_tf.model import OUTPUT_NAMES, attended_pass_model, build_ddah, two_pass_outputs
from ddah_tf.settings import DDAHSettings
from ddah_tf.variable_groups import attention_variables, trunk_variables

# The loss parts, in the order the loop logs them: pass a (attended), then pass b (raw).
PASS_A = ("nll_a", "quantization_a")
PASS_B = ("nll_b", "quantization_b")
LOSS_PARTS = PASS_A + PASS_B
TRUNK, ATTENTION = "trunk", "attention"   # the optimiser groups, applied in this order


class DDAH(HashingMethod):
    """Discriminative Deep Attention-aware Hashing (Xiong et al., PRICAI 2019), as the
    authors' PyTorch code trains it (ddah_tf/README.md).

    One forward in training mode gives pass a (trunk on the attended image) and pass b
    (trunk on the raw image). Logged cost: loss_c = loss_a + loss_b, each pass
    NLL + quantization_weight * mean_i sum_k | |h_ik| - 1 | (parts ``nll_a``,
    ``quantization_a``, ``nll_b``, ``quantization_b``). Two optimisers, applied in order:

    * ``trunk`` (the original's optimizer_b): d loss_c / d trunk;
    * ``attention`` (optimizer_a): d (loss_c + loss_s) / d attention, where
      loss_s = max(0, margin - loss_b + loss_a), from the global batch's loss_a and
      loss_b under a distribution;

    each with PyTorch's coupled L2 (grad += weight_decay * w), both gradients from the
    same forward. bn1 / bn2 of the attention branch are in neither (the original's
    quirk) unless ``include_skip_batchnorms``. Both learning rates follow
    base * 0.5 ** (epoch // lr_halve_every) (:meth:`learning_rate`).

    Evaluation and export use pass a only (:meth:`inference_model`): codes are
    sign(relaxed_codes of the attended image), in inference mode, with the trunk's moving
    batch-norm statistics. Those come from pass a alone (``batch_norm_statistics=
    "attended"``): pass b normalises with its own batch's statistics but leaves the
    moving ones alone, so they describe the attended images that inference sees. With
    "both_passes" (how this port trained before 2026-12-06) both passes update them and
    they blend the attended and the raw images' distributions, which no image has. The
    original never switches to inference mode: it codes with each batch's own statistics
    (``--eval_batch_norm batch`` evaluates that way).

    Settings: :class:`ddah_tf.settings.DDAHSettings` (quantization_weight is the original's
    LOSS_01; margin the hinge's m; weight_decay the coupled L2 rate of both optimisers;
    unused_bn3 builds the original's unused bn3, the public model's layout).
    """

    Settings = DDAHSettings
    output_names = OUTPUT_NAMES

    def build_model(self, num_classes: int) -> keras.Model:
        return build_ddah(num_classes, self.num_bits, self.width_multiplier,
                          unused_bn3=self.unused_bn3, min_max_epsilon=self.min_max_epsilon)

    def call_model(self, model, images, training):
        """The model's four outputs; in training, pass b leaves the moving statistics to
        pass a unless ``batch_norm_statistics="both_passes"``."""
        if training and self.batch_norm_statistics == "attended":
            return two_pass_outputs(model, images)
        return model(images, training=training)

    def loss_terms(self, model, outputs, labels):
        del model
        return {
            "nll_a": losses.nll_loss(labels, outputs["logits"]),
            "quantization_a": losses.quantization_loss(outputs["relaxed_codes"],
                                                       self.quantization_weight),
            "nll_b": losses.nll_loss(labels, outputs["raw_logits"]),
            "quantization_b": losses.quantization_loss(outputs["raw_relaxed_codes"],
                                                       self.quantization_weight),
        }

    def loss_reductions(self) -> dict[str, str]:
        return {k: "mean" for k in LOSS_PARTS}

    def attention_objective(self, parts: dict) -> Any:
        """loss_c + loss_s of the parts (global-batch values under a distribution)."""
        loss_a = parts["nll_a"] + parts["quantization_a"]
        loss_b = parts["nll_b"] + parts["quantization_b"]
        return losses.attention_objective(loss_a, loss_b, self.margin)

    def optimizer_groups(self, model: keras.Model) -> list[OptimizerGroup]:
        """Trunk first (d loss_c), then attention (d (loss_c + loss_s)); bn1 / bn2 (and
        bn3) in neither unless ``include_skip_batchnorms`` (ddah_tf.variable_groups)."""
        return [
            OptimizerGroup(TRUNK, trunk_variables(model), objective=LOSS_PARTS,
                           coupled_weight_decay=self.weight_decay),
            OptimizerGroup(ATTENTION,
                           attention_variables(model, self.include_skip_batchnorms),
                           objective=self.attention_objective,
                           coupled_weight_decay=self.weight_decay),
        ]

    def learning_rate(self, epoch: int, base: float) -> float:
        """The original's ``adjust_learning_rate``: base * 0.5 ** (epoch // lr_halve_every)."""
        return schedule.learning_rate(epoch, base, self.lr_halve_every)

    def inference_model(self, model: keras.Model) -> keras.Model:
        """Pass a only: images -> [logits, relaxed_codes] of the attended image."""
        return attended_pass_model(model)

    def before_optimizer_step(self, model, outputs, labels):
        """Nothing: DDAH keeps no state outside its optimisers."""
        del model, outputs, labels
