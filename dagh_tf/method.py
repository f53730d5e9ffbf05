"""DAGH as a shared-loop method: one pass, one Adam, the discrete identity loss."""

from __future__ import annotations

import math
from typing import Any

import keras

from common.method import (ALL_VARIABLES, HashingMethod, OptimizerGroup, check_settings,
                           is_integer, is_real)
from dagh_tf import losses
from dagh_tf.layers.discrete_hash import BACKWARDS
from dagh_tf.model import (ATTENTIONS, HASH_LAYERS, IDENTITY_HEADS, OUTPUT_NAMES, PASSES,
                           TWO_PASS_OUTPUT_NAMES, build_dagh)
from ddah_tf import losses as ddah_losses
from ddah_tf import schedule
from ddah_tf.model import attended_pass_model, two_pass_outputs
from ddah_tf.variable_groups import attention_variables, trunk_variables

LOSS_PARTS = ("identity", "quantization")
TWO_PASS_LOSS_PARTS = ("identity_a", "quantization_a", "identity_b", "quantization_b")


class DAGH(HashingMethod):
    """Deep Discrete Attention Guided Hashing (Xiong et al., ICMR 2020), built from its
    abstract on DDAH's public code (dagh_tf/README.md gives every choice and why).

    Cost = ``identity`` (the discrete identity loss on the binary codes, margin m,
    scale s; with ``identity_head="softmax"`` the plain cross-entropy of a dense
    classifier) + ``quantization`` (DDAH's 0.001 * mean_i sum_k | |h_ik| - 1 |).
    One Adam over every trainable variable with DDAH's coupled L2 (1e-4) and DDAH's
    schedule (base * 0.5 ** (epoch // 100)). Codes: sign(relaxed_codes), equal to the
    discrete hash layer's output.

    Args:
        num_bits: code length.
        width_multiplier: scales every width (1.0 = DDAH's).
        attention: "cascade" (DAGH) or "parallel" (DDAH's layout, for the ablation).
        hash_layer: "discrete" (DAGH) or "tanh" (for the ablation).
        identity_head: "discrete" (DAGH) or "softmax" (for the ablation).
        scale: s of the discrete identity head; None (default): num_bits / 3
            (:func:`dagh_tf.losses.default_scale`), recorded resolved in the config.
        margin: m of the discrete identity loss (normalised similarity units).
        backward: the discrete hash layer's backward, "identity" or "clipped".
        quantization_weight: DDAH's 0.001.
        weight_decay: coupled L2 rate (DDAH's 1e-4; 0: none).
        gate_kernel: the cascade's spatial gates' kernel size.
        min_max_epsilon: epsilon of DDAH's min-max normalisations (0: DDAH's).
        lr_halve_every: the schedule's period in epochs (DDAH's 100).
        passes: 1 (the abstract's DAGH: one pass, one Adam) or 2: trained as DDAH is
            (dagh_tf/README.md, "Two passes"): the network after the spatial attention
            runs on the attended (a) and on the raw image (b), each pass with its
            identity and quantization loss; two Adams, the trunk's minimising both passes,
            the attention branch's also the hinge max(0, margin_ab - loss_b + loss_a)
            (DDAH's, margin 0); pass b leaves the moving batch-norm statistics to pass a;
            codes from pass a.
    """

    name = "dagh"
    output_names = OUTPUT_NAMES
    settings_added_later = {"passes": 1}

    def __init__(self, num_bits: int = 48, width_multiplier: float = 1.0,
                 attention: str = "cascade", hash_layer: str = "discrete",
                 identity_head: str = "discrete", scale: float | None = None,
                 margin: float = losses.MARGIN, backward: str = "identity",
                 quantization_weight: float = ddah_losses.QUANTIZATION_WEIGHT,
                 weight_decay: float = ddah_losses.WEIGHT_DECAY, gate_kernel: int = 3,
                 min_max_epsilon: float = 0.0,
                 lr_halve_every: int = schedule.HALVE_EVERY_EPOCHS, passes: int = 1):
        if scale is None and is_integer(num_bits) and num_bits >= 1:
            scale = losses.default_scale(int(num_bits))
        self.num_bits, self.width_multiplier = num_bits, width_multiplier
        self.attention, self.hash_layer = attention, hash_layer
        self.identity_head, self.scale, self.margin = identity_head, scale, margin
        self.backward, self.quantization_weight = backward, quantization_weight
        self.weight_decay, self.gate_kernel = weight_decay, gate_kernel
        self.min_max_epsilon, self.lr_halve_every = min_max_epsilon, lr_halve_every
        self.passes = passes
        finite = lambda v: is_real(v) and math.isfinite(v)  # noqa: E731
        check_settings([
            (is_integer(num_bits) and num_bits >= 1, f"num_bits must be >= 1, got {num_bits}"),
            (finite(width_multiplier) and width_multiplier > 0,
             f"width_multiplier must be > 0, got {width_multiplier}"),
            (attention in ATTENTIONS, f"attention must be one of {ATTENTIONS}, got {attention!r}"),
            (hash_layer in HASH_LAYERS,
             f"hash_layer must be one of {HASH_LAYERS}, got {hash_layer!r}"),
            (identity_head in IDENTITY_HEADS,
             f"identity_head must be one of {IDENTITY_HEADS}, got {identity_head!r}"),
            (scale is not None and finite(scale) and scale > 0,
             f"scale must be > 0, got {scale}"),
            (finite(margin) and 0 <= margin < 2, f"margin must be in [0, 2), got {margin}"),
            (backward in BACKWARDS, f"backward must be one of {BACKWARDS}, got {backward!r}"),
            (finite(quantization_weight) and quantization_weight >= 0,
             f"quantization_weight must be >= 0, got {quantization_weight}"),
            (finite(weight_decay) and weight_decay >= 0,
             f"weight_decay must be >= 0, got {weight_decay}"),
            (is_integer(gate_kernel) and gate_kernel >= 1 and gate_kernel % 2 == 1,
             f"gate_kernel must be an odd integer >= 1 (centred 'same' padding), got "
             f"{gate_kernel}"),
            (finite(min_max_epsilon) and min_max_epsilon >= 0,
             f"min_max_epsilon must be >= 0, got {min_max_epsilon}"),
            (is_integer(lr_halve_every) and lr_halve_every >= 1,
             f"lr_halve_every must be an integer >= 1, got {lr_halve_every}"),
            (is_integer(passes) and passes in PASSES,
             f"passes must be one of {PASSES}, got {passes!r}"),
        ])
        self.num_bits, self.gate_kernel = int(num_bits), int(gate_kernel)
        self.lr_halve_every, self.passes = int(lr_halve_every), int(passes)
        if self.passes == 2:
            self.output_names = TWO_PASS_OUTPUT_NAMES

    def build_model(self, num_classes: int) -> keras.Model:
        return build_dagh(num_classes, self.num_bits, self.width_multiplier,
                          attention=self.attention, hash_layer=self.hash_layer,
                          identity_head=self.identity_head, scale=self.scale,
                          backward=self.backward, gate_kernel=self.gate_kernel,
                          min_max_epsilon=self.min_max_epsilon, passes=self.passes)

    def call_model(self, model, images, training):
        """One call; with two passes in training, pass b leaves the moving statistics to a."""
        if training and self.passes == 2:
            return two_pass_outputs(model, images)
        return model(images, training=training)

    def _pass_terms(self, labels, logits, relaxed) -> tuple:
        if self.identity_head == "discrete":
            identity = losses.discrete_identity_loss(labels, logits, self.scale, self.margin)
        else:
            identity = ddah_losses.nll_loss(labels, logits)
        return identity, losses.quantization_loss(relaxed, self.quantization_weight)

    def loss_terms(self, model, outputs, labels):
        del model
        identity, quantization = self._pass_terms(labels, outputs["logits"],
                                                  outputs["relaxed_codes"])
        if self.passes == 1:
            return {"identity": identity, "quantization": quantization}
        identity_b, quantization_b = self._pass_terms(labels, outputs["raw_logits"],
                                                      outputs["raw_relaxed_codes"])
        return {"identity_a": identity, "quantization_a": quantization,
                "identity_b": identity_b, "quantization_b": quantization_b}

    def loss_reductions(self) -> dict[str, str]:
        return {k: "mean" for k in (LOSS_PARTS if self.passes == 1 else TWO_PASS_LOSS_PARTS)}

    def attention_objective(self, parts: dict):
        """Two passes: loss_c + DDAH's hinge (margin 0) for the attention branch."""
        loss_a = parts["identity_a"] + parts["quantization_a"]
        loss_b = parts["identity_b"] + parts["quantization_b"]
        return ddah_losses.attention_objective(loss_a, loss_b, ddah_losses.MARGIN)

    def optimizer_groups(self, model: keras.Model) -> list[OptimizerGroup]:
        """One Adam over every trainable variable, with DDAH's coupled L2; with two passes
        DDAH's two Adams (trunk, then attention; bn1 / bn2 in neither, as DDAH)."""
        if self.passes == 1:
            return [OptimizerGroup(ALL_VARIABLES, tuple(model.trainable_variables),
                                   coupled_weight_decay=self.weight_decay)]
        return [OptimizerGroup("trunk", trunk_variables(model), objective=TWO_PASS_LOSS_PARTS,
                               coupled_weight_decay=self.weight_decay),
                OptimizerGroup("attention", attention_variables(model),
                               objective=self.attention_objective,
                               coupled_weight_decay=self.weight_decay)]

    def inference_model(self, model: keras.Model) -> keras.Model:
        """Pass a only (with two passes): images -> [logits, relaxed_codes]."""
        return model if self.passes == 1 else attended_pass_model(model)

    def learning_rate(self, epoch: int, base: float) -> float:
        """DDAH's schedule: base * 0.5 ** (epoch // lr_halve_every)."""
        return schedule.learning_rate(epoch, base, self.lr_halve_every)

    def before_optimizer_step(self, model, outputs, labels):
        """Nothing: DAGH's centers are trainable weights, moved by the optimiser."""
        del model, outputs, labels

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "num_bits": self.num_bits,
                "width_multiplier": self.width_multiplier, "attention": self.attention,
                "hash_layer": self.hash_layer, "identity_head": self.identity_head,
                "scale": self.scale, "margin": self.margin, "backward": self.backward,
                "quantization_weight": self.quantization_weight,
                "weight_decay": self.weight_decay, "gate_kernel": self.gate_kernel,
                "min_max_epsilon": self.min_max_epsilon, "lr_halve_every": self.lr_halve_every,
                "passes": self.passes}
