"""DAGH as a shared-loop method: one pass, one Adam, the discrete identity loss."""

from __future__ import annotations


import keras

from common.methods.base import ALL_VARIABLES, HashingMethod, OptimizerGroup
from dagh_tf import losses
from dagh_tf.model import OUTPUT_NAMES, TWO_PASS_OUTPUT_NAMES, build_dagh
from dagh_tf.settings import DAGHSettings
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

    Settings: :class:`dagh_tf.settings.DAGHSettings` (scale None: num_bits / 3,
    :func:`dagh_tf.losses.default_scale`, recorded resolved in the config).

    With ``passes=2`` it is trained as DDAH is (dagh_tf/README.md, "Two passes"): the
    network after the spatial attention runs on the attended (a) and on the raw image (b),
    each pass with its identity and quantization loss; two Adams, the trunk's minimising
    both passes, the attention branch's also the hinge max(0, margin_ab - loss_b + loss_a)
    (DDAH's, margin 0); pass b leaves the moving batch-norm statistics to pass a; codes from
    pass a.
    """

    Settings = DAGHSettings
    output_names: tuple[str, ...] = OUTPUT_NAMES

    def __init__(self, settings: DAGHSettings | None = None, **values):
        super().__init__(settings, **values)
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
