"""DFH's settings, each written once (common.methods.settings): the method's constructor,
its command-line flags and every run's recorded config all come from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.methods.settings import BITS, HIDDEN_UNITS, SEED, WIDTH, MethodSettings, setting


@dataclass(frozen=True)
class DFHSettings(MethodSettings):
    """DFH-GANs' hashing side (Y. F. Wang, 2021 thesis), from its abstract: dfh_tf/README.md
    gives every choice."""

    name: ClassVar[str] = "dfh"
    display_name: ClassVar[str] = "DFH"
    table_order: ClassVar[int] = 5
    method_class: ClassVar[str] = "dfh_tf.method:DFH"
    table_rows: ClassVar[dict] = {  # the ablation: one part replaced
        "dfh_ce": ("DFH with cross-entropy instead of the metric loss",
                   {"hash_loss": "cross_entropy"}),
        "dfh_first_order": ("DFH with first-order quantization", {"quantization": "first_order"}),
        "dfh_no_distillation": ("DFH without distillation", {"distillation_weight": 0.0}),
        "dfh_similarity": ("DFH distilling the feature classifier's similarities into the codes",
                           {"distillation": "similarity"}),
        "dfh_one_stage": ("DFH in one stage (codes trained from the start)",
                          {"feature_epochs": 0}),
    }
    # Runs recorded before the setting existed distilled logits.
    added_later: ClassVar[dict] = {"distillation": "logits"}
    flag_checks: ClassVar[tuple] = (
        (("feature_epochs", "epochs"), lambda v: v["feature_epochs"] < v["epochs"],
         "--feature_epochs must be below --epochs, or the codes are never trained"),)

    num_bits: int = setting(48, "Code length in bits.", low=1, high=BITS)
    width_multiplier: float = setting(1.0, "Backbone width (1.0 = DCBH's; smaller for quick "
                                           "tests).", above=0.0, high=WIDTH)
    feature_units: int = setting(512, "Width of the feature layer.", low=1, high=HIDDEN_UNITS)
    feature_epochs: int = setting(50, "Stage 1: epochs of the feature classifier alone before "
                                      "the codes are trained (0: one stage). Must be below "
                                      "--epochs.", low=0)
    hash_loss: str = setting(
        "metric", "metric: margin pair loss plus per-bit sign control towards identity hash "
        "centers (DFH); cross_entropy: a classifier on the codes (ablation).",
        choices=("metric", "cross_entropy"))
    pair_margin: float = setting(0.5, "Margin of the pair loss, in Hamming distance / bits "
                                      "(DSH's 2K on squared distances).", above=0.0, at_most=1.0,
                                 finite=True)
    sign_weight: float = setting(1.0, "Weight of the sign-control term.", low=0.0, finite=True)
    quantization: str = setting(
        "quadratic", "quadratic: mean (|h| - 1)^2 (DFH); first_order: mean | |h| - 1 | "
        "(ablation).", choices=("quadratic", "first_order"))
    quantization_weight: float = setting(0.1, "Weight of the quantization term.", low=0.0,
                                         finite=True)
    distillation_weight: float = setting(
        1.0, "Weight of the distillation from the feature classifier to the code classifier "
        "(0: none, ablation).", low=0.0, finite=True)
    distillation: str = setting(
        "logits", "logits: the code classifier learns the feature classifier's softened "
        "outputs (DFH as built); similarity: the codes' pairwise cosine similarities learn the "
        "feature classifier's (no classification through the codes).",
        choices=("logits", "similarity"))
    temperature: float = setting(4.0, "Distillation temperature T (distillation logits).",
                                 above=0.0, finite=True)
    center_seed: int = setting(0, "Seed of the identity hash centers.", low=0, high=SEED)
