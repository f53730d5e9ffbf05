"""Train DCBH (Jang et al., ACCV 2018) with the shared loop.

    python -m dcbh_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/dcbh
    python -m dcbh_tf.train --dataset facescrub --data_dir data --model_dir runs/dcbh_fs

Model flags are defined here; data, loop and evaluation flags are shared
(common/cli.py); ``--helpshort`` lists both. Re-running with the same --model_dir
resumes.
"""

from __future__ import annotations

from absl import flags

from common import cli, exits

NUM_BITS = flags.DEFINE_integer("num_bits", 48, "Code length in bits.", lower_bound=1)
CODE_LENGTH = flags.DEFINE_integer("code_length", 6,
                                   "Units per bit block (the paper's code length).", lower_bound=1)
QUANTIZATION_WEIGHT = flags.DEFINE_float("quantization_weight", 0.1,
                                         "Weight of the quantization loss.", lower_bound=0.0)
CENTER_WEIGHT = flags.DEFINE_float("center_weight", 1e-4, "Weight of the center loss.",
                                   lower_bound=0.0)
WEIGHT_DECAY = flags.DEFINE_enum(
    "weight_decay", "original", ["original", "l2", "none"],
    "original: the released code's double-applied (ineffective) penalty; l2: the intended "
    "plain L2; none.")
CENTER_REDUCTION = flags.DEFINE_enum("center_reduction", "sum", ["sum", "mean"],
                                     "Center loss over the batch: sum (original) or mean.")
WIDTH_MULTIPLIER = flags.DEFINE_float("width_multiplier", 1.0,
                                      "Backbone width (1.0 = original; smaller for quick tests).")
flags.register_validator("width_multiplier", lambda v: v > 0,
                         message="--width_multiplier must be > 0")
exits.bound_flag("num_bits", exits.MAX_BITS, exits.WHY_BITS)
exits.bound_flag("code_length", exits.MAX_UNITS_PER_BIT, exits.WHY_UNITS)
exits.bound_flag("width_multiplier", exits.MAX_WIDTH_MULTIPLIER, exits.WHY_WIDTH)
for _name in ("quantization_weight", "center_weight"):
    exits.finite_flag(_name)
flags.adopt_module_key_flags(cli)  # --helpshort lists the shared flags too


def make_method():
    """The DCBH method the flags describe (imports TensorFlow)."""
    from dcbh_tf.method import DCBH

    return DCBH(num_bits=NUM_BITS.value, code_length=CODE_LENGTH.value,
                quantization_weight=QUANTIZATION_WEIGHT.value, center_weight=CENTER_WEIGHT.value,
                weight_decay=WEIGHT_DECAY.value, center_reduction=CENTER_REDUCTION.value,
                width_multiplier=WIDTH_MULTIPLIER.value)


main = cli.training_main(make_method)


def run() -> None:
    """Console-script entry point."""
    cli.run_app(main)


if __name__ == "__main__":
    run()
