"""Train DDCH (Fu, Wang, Tang, PRCV 2021) with the shared loop.

    python -m ddch_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/ddch
    python -m ddch_tf.train --dataset facescrub --data_dir data --model_dir runs/ddch_fs

Model flags are defined here; data, loop and evaluation flags are shared with DCBH
(common/cli.py). Re-running with the same --model_dir resumes.
"""

from __future__ import annotations

from absl import flags

from common import cli, exits

NUM_BITS = flags.DEFINE_integer("num_bits", 48, "Code length in bits.", lower_bound=1)
FEATURE_UNITS = flags.DEFINE_integer("feature_units", 512,
                                     "Width of the feature layer (feature centers).", lower_bound=1)
HASH_HIDDEN_UNITS = flags.DEFINE_integer("hash_hidden_units", 512,
                                         "Hidden width of the hash function.", lower_bound=1)
QUANTIZATION_WEIGHT = flags.DEFINE_float("quantization_weight", 0.1,
                                         "Weight of mean((|relaxed| - 1)^2).", lower_bound=0.0)
FEATURE_CENTER_WEIGHT = flags.DEFINE_float("feature_center_weight", 1e-4,
                                           "Weight of the feature center loss.", lower_bound=0.0)
CODE_CENTER_WEIGHT = flags.DEFINE_float("code_center_weight", 1e-3,
                                        "Weight of the code (hash) center loss.", lower_bound=0.0)
WEIGHT_DECAY = flags.DEFINE_enum(
    "weight_decay", "original", ["original", "l2", "none"],
    "original: DCBH's double-applied (ineffective) penalty, so DDCH and DCBH differ only in "
    "their heads; l2: plain L2; none.")
CENTER_REDUCTION = flags.DEFINE_enum("center_reduction", "sum", ["sum", "mean"],
                                     "Both center losses over the batch: sum or mean.")
WIDTH_MULTIPLIER = flags.DEFINE_float("width_multiplier", 1.0,
                                      "Backbone width (1.0 = DCBH's; smaller for quick runs).")
flags.register_validator("width_multiplier", lambda v: v > 0,
                         message="--width_multiplier must be > 0")
exits.bound_flag("num_bits", exits.MAX_BITS, exits.WHY_BITS)
exits.bound_flag("feature_units", exits.MAX_HIDDEN_UNITS, exits.WHY_UNITS)
exits.bound_flag("hash_hidden_units", exits.MAX_HIDDEN_UNITS, exits.WHY_UNITS)
exits.bound_flag("width_multiplier", exits.MAX_WIDTH_MULTIPLIER, exits.WHY_WIDTH)
for _name in ("quantization_weight", "feature_center_weight", "code_center_weight"):
    exits.finite_flag(_name)
flags.adopt_module_key_flags(cli)


def make_method():
    """The DDCH method the flags describe (imports TensorFlow)."""
    from ddch_tf.method import DDCH

    return DDCH(num_bits=NUM_BITS.value, feature_units=FEATURE_UNITS.value,
                hash_hidden_units=HASH_HIDDEN_UNITS.value,
                quantization_weight=QUANTIZATION_WEIGHT.value,
                feature_center_weight=FEATURE_CENTER_WEIGHT.value,
                code_center_weight=CODE_CENTER_WEIGHT.value, weight_decay=WEIGHT_DECAY.value,
                center_reduction=CENTER_REDUCTION.value, width_multiplier=WIDTH_MULTIPLIER.value)


main = cli.training_main(make_method)


def run() -> None:
    """Console-script entry point."""
    cli.run_app(main)


if __name__ == "__main__":
    run()
