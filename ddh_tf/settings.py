"""DDH's settings, each written once (common.methods.settings): the method's constructor,
its command-line flags and every run's recorded config all come from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.methods.settings import BITS, UNITS_PER_BIT, MethodSettings, setting


@dataclass(frozen=True)
class DDHSettings(MethodSettings):
    """Discriminative Deep Hashing (Lin, Li, Tang, IJCAI 2017), at its published size (no
    width multiplier); ddh_tf/README.md."""

    name: ClassVar[str] = "ddh"
    display_name: ClassVar[str] = "DDH"
    table_order: ClassVar[int] = 2
    method_class: ClassVar[str] = "ddh_tf.method:DDH"

    num_bits: int = setting(48, "Code length in bits.", low=1, high=BITS)
    split_num: int = setting(4, "Units per bit entering divide-and-encode.", low=1,
                             high=UNITS_PER_BIT)
    quantization_weight: float = setting(0.01, "Weight of mean(| |h| - 1 |).", low=0.0,
                                         finite=True)
    weight_decay: str = setting("l2", "l2: the original's Keras-1 l2 on every kernel; none.",
                                choices=("l2", "none"))
    weight_decay_scale: float = setting(1e-4, "Keras-1 l2 coefficient c (adds c * sum(w^2)).",
                                        low=0.0, finite=True)
