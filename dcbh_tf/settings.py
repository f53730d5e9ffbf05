"""DCBH's settings, each written once (common.methods.settings): the method's constructor,
its command-line flags and every run's recorded config all come from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.methods.settings import BITS, UNITS_PER_BIT, WIDTH, MethodSettings, setting


@dataclass(frozen=True)
class DCBHSettings(MethodSettings):
    """Deep Clustering and Block Hashing (Jang et al., ACCV 2018): defaults are the original
    code's (docs/PORTING.md)."""

    name: ClassVar[str] = "dcbh"
    display_name: ClassVar[str] = "DCBH"
    table_order: ClassVar[int] = 0
    method_class: ClassVar[str] = "dcbh_tf.method:DCBH"

    num_bits: int = setting(48, "Code length in bits.", low=1, high=BITS)
    code_length: int = setting(6, "Units per bit block (the paper's code length).", low=1,
                               high=UNITS_PER_BIT)
    quantization_weight: float = setting(0.1, "Weight of the quantization loss.", low=0.0,
                                         finite=True)
    center_weight: float = setting(1e-4, "Weight of the center loss.", low=0.0, finite=True)
    weight_decay: str = setting(
        "original", "original: the released code's double-applied (ineffective) penalty; l2: "
        "the intended plain L2; none.", choices=("original", "l2", "none"))
    weight_decay_scale: float = setting(2e-4, "L2 scale (the original's 2e-4, TF1 semantics).",
                                        low=0.0, finite=True, flag=False)
    center_reduction: str = setting("sum", "Center loss over the batch: sum (original) or mean.",
                                    choices=("sum", "mean"))
    width_multiplier: float = setting(1.0, "Backbone width (1.0 = original; smaller for quick "
                                           "tests).", above=0.0, high=WIDTH)
