"""DDAH's settings, each written once (common.methods.settings): the method's constructor,
its command-line flags and every run's recorded config all come from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from common.methods.settings import BITS, EPOCHS, WIDTH, MethodSettings, setting


@dataclass(frozen=True)
class DDAHSettings(MethodSettings):
    """Discriminative Deep Attention-aware Hashing (Xiong et al., PRICAI 2019), as the
    authors' PyTorch code trains it (ddah_tf/README.md)."""

    name: ClassVar[str] = "ddah"
    display_name: ClassVar[str] = "DDAH"
    table_order: ClassVar[int] = 3
    method_class: ClassVar[str] = "ddah_tf.method:DDAH"
    added_later: ClassVar[dict] = {"batch_norm_statistics": "both_passes"}
    table_rows: ClassVar[dict] = {
        "ddah_blended": ("DDAH, batch-norm statistics of both passes blended",
                         {"batch_norm_statistics": "both_passes"}),
    }

    num_bits: int = setting(48, "Code length in bits.", low=1, high=BITS)
    width_multiplier: float = setting(1.0, "Scales every width (1.0 = original; smaller for "
                                           "quick tests).", above=0.0, high=WIDTH)
    quantization_weight: float = setting(
        1e-3, "Weight of mean_i sum_k | |h_ik| - 1 | in each pass's loss.", low=0.0, finite=True)
    margin: float = setting(0.0, "m of the attention hinge max(0, m - loss_b + loss_a).",
                            finite=True)
    weight_decay: float = setting(1e-4, "Coupled L2 of both optimisers (grad += rate * w; 0: "
                                        "none).", low=0.0, finite=True)
    include_skip_batchnorms: bool = setting(
        False, "Train the attention branch's bn1 / bn2 too (the original never updates them).")
    unused_bn3: bool = setting(False, "Build the original's unused bn3 (no effect; the public "
                                      "layout).")
    min_max_epsilon: float = setting(0.0, "Epsilon of the min-max normalisations (original: "
                                          "none).", low=0.0, finite=True)
    lr_halve_every: int = setting(100, "Halve both learning rates every N epochs (the original: "
                                       "100).", low=1, high=EPOCHS)
    batch_norm_statistics: str = setting(
        "attended", "Which passes update the trunk's moving batch-norm statistics, which "
        "inference (codes, export) uses: attended (pass a alone: the images inference sees) or "
        "both_passes (the attended and the raw pass blended, as this port did before "
        "2026-12-06).", choices=("attended", "both_passes"))
