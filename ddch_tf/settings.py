"""DDCH's settings, each written once (common.methods.settings): the method's constructor,
its command-line flags and every run's recorded config all come from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.methods.settings import BITS, HIDDEN_UNITS, WIDTH, MethodSettings, setting


@dataclass(frozen=True)
class DDCHSettings(MethodSettings):
    """Deep Double Center Hashing (Fu, Wang, Tang, PRCV 2021); choices in ddch_tf/README.md."""

    name: ClassVar[str] = "ddch"
    display_name: ClassVar[str] = "DDCH"
    table_order: ClassVar[int] = 1
    method_class: ClassVar[str] = "ddch_tf.method:DDCH"

    num_bits: int = setting(48, "Code length in bits.", low=1, high=BITS)
    feature_units: int = setting(512, "Width of the feature layer (feature centers).", low=1,
                                 high=HIDDEN_UNITS)
    hash_hidden_units: int = setting(512, "Hidden width of the hash function.", low=1,
                                     high=HIDDEN_UNITS)
    quantization_weight: float = setting(0.1, "Weight of mean((|relaxed| - 1)^2).", low=0.0,
                                         finite=True)
    feature_center_weight: float = setting(1e-4, "Weight of the feature center loss.", low=0.0,
                                           finite=True)
    code_center_weight: float = setting(1e-3, "Weight of the code (hash) center loss.",
                                        low=0.0, finite=True)
    weight_decay: str = setting(
        "original", "original: DCBH's double-applied (ineffective) penalty, so DDCH and DCBH "
        "differ only in their heads; l2: plain L2; none.", choices=("original", "l2", "none"))
    weight_decay_scale: float = setting(2e-4, "L2 scale (DCBH's 2e-4, TF1 semantics).",
                                        low=0.0, finite=True, flag=False)
    center_reduction: str = setting("sum", "Both center losses over the batch: sum or mean.",
                                    choices=("sum", "mean"))
    width_multiplier: float = setting(1.0, "Backbone width (1.0 = DCBH's; smaller for quick "
                                           "runs).", above=0.0, high=WIDTH)
