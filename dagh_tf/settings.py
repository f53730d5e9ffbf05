"""DAGH's settings, each written once (common.methods.settings): the method's constructor,
its command-line flags and every run's recorded config all come from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.methods.settings import BITS, EPOCHS, WIDTH, MethodSettings, setting


@dataclass(frozen=True)
class DAGHSettings(MethodSettings):
    """Deep Discrete Attention Guided Hashing (Xiong et al., ICMR 2020), built from its
    abstract on DDAH's public code (dagh_tf/README.md gives every choice and why)."""

    name: ClassVar[str] = "dagh"
    display_name: ClassVar[str] = "DAGH"
    table_order: ClassVar[int] = 4
    method_class: ClassVar[str] = "dagh_tf.method:DAGH"
    added_later: ClassVar[dict] = {"passes": 1}
    table_rows: ClassVar[dict] = {  # the ablation (one part removed) and a variant
        "dagh_no_cascade": ("DAGH without the attention cascade", {"attention": "parallel"}),
        "dagh_no_discrete": ("DAGH without the discrete hash layer", {"hash_layer": "tanh"}),
        "dagh_no_identity": ("DAGH without the discrete identity loss",
                             {"identity_head": "softmax"}),
        "dagh_no_parts": ("DAGH without all three (DDAH's network, one pass)",
                          {"attention": "parallel", "hash_layer": "tanh",
                           "identity_head": "softmax"}),
        "dagh_two_pass": ("DAGH trained in DDAH's two passes", {"passes": 2}),
    }

    num_bits: int = setting(48, "Code length in bits.", low=1, high=BITS)
    width_multiplier: float = setting(1.0, "Scales every width (1.0 = DDAH's; smaller for quick "
                                           "tests).", above=0.0, high=WIDTH)
    attention: str = setting(
        "cascade", "cascade: channel then spatial attention, stage after stage (DAGH); "
        "parallel: DDAH's side-by-side channel attentions (ablation).",
        choices=("cascade", "parallel"))
    hash_layer: str = setting(
        "discrete", "discrete: binary codes in the forward pass (DAGH); tanh: relaxed codes "
        "(ablation).", choices=("discrete", "tanh"))
    identity_head: str = setting(
        "discrete", "discrete: Hamming similarity to binary identity centers with a margin "
        "(DAGH); softmax: a dense classifier and cross-entropy (ablation).",
        choices=("discrete", "softmax"))
    scale: float | None = setting(None, "s of the discrete identity head's logits (default: "
                                        "num_bits / 3, 16 at 48 bits).", above=0.0, finite=True,
                                  optional=True)
    margin: float = setting(0.2, "m of the discrete identity loss (similarity units: m * bits / "
                                 "2 bits).", low=0.0, below=2.0, finite=True)
    backward: str = setting("identity", "The discrete hash layer's backward: identity "
                                        "(straight-through) or clipped (zero where |h| > 1).",
                            choices=("identity", "clipped"))
    quantization_weight: float = setting(1e-3, "Weight of mean_i sum_k | |h_ik| - 1 | (DDAH's).",
                                         low=0.0, finite=True)
    weight_decay: float = setting(1e-4, "Coupled L2 of the optimiser (grad += rate * w; 0: "
                                        "none).", low=0.0, finite=True)
    gate_kernel: int = setting(3, "Kernel of the cascade's spatial gates.", low=1, upper=7,
                               odd=True)
    min_max_epsilon: float = setting(0.0, "Epsilon of DDAH's min-max normalisations (DDAH's: "
                                          "none).", low=0.0, finite=True)
    lr_halve_every: int = setting(100, "Halve the learning rate every N epochs (DDAH's: 100).",
                                  low=1, high=EPOCHS)
    passes: int = setting(
        1, "1: DAGH as its abstract describes it (one pass, one Adam); 2: trained as DDAH is, "
        "on the attended and on the raw image with two Adams and DDAH's hinge "
        "(dagh_tf/README.md).", choices=(1, 2))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale is None:  # recorded resolved: num_bits / 3 (dagh_tf/losses.py)
            self.derive(scale=self.num_bits / 3)
