"""Train DDAH (Xiong et al., PRICAI 2019) with the shared loop.

    python -m ddah_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/ddah
    python -m ddah_tf.train --dataset facescrub --data_dir data --epochs 1000 --shuffle

Model flags are defined here; data, loop and evaluation flags are shared (common/cli.py).
The original trained 1000 epochs of batch 256, reshuffled every epoch, with two Adams
(lr 1e-3 halved every 100 epochs, epsilon 1e-8, coupled L2 1e-4): pass --epochs 1000
--shuffle (the shared defaults, 2000 epochs in file order, are DCBH's); --learning_rate
is the schedule's base. Re-running with the same --model_dir resumes.
"""

from __future__ import annotations

from absl import flags

from common import cli, exits

NUM_BITS = flags.DEFINE_integer("num_bits", 48, "Code length in bits.", lower_bound=1)
WIDTH_MULTIPLIER = flags.DEFINE_float(
    "width_multiplier", 1.0, "Scales every width (1.0 = original; smaller for quick tests).")
QUANTIZATION_WEIGHT = flags.DEFINE_float(
    "quantization_weight", 1e-3, "Weight of mean_i sum_k | |h_ik| - 1 | in each pass's loss.",
    lower_bound=0.0)
MARGIN = flags.DEFINE_float("margin", 0.0,
                            "m of the attention hinge max(0, m - loss_b + loss_a).")
WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 1e-4, "Coupled L2 of both optimisers (grad += rate * w; 0: none).",
    lower_bound=0.0)
INCLUDE_SKIP_BATCHNORMS = flags.DEFINE_bool(
    "include_skip_batchnorms", False,
    "Train the attention branch's bn1 / bn2 too (the original never updates them).")
UNUSED_BN3 = flags.DEFINE_bool(
    "unused_bn3", False, "Build the original's unused bn3 (no effect; the public layout).")
MIN_MAX_EPSILON = flags.DEFINE_float(
    "min_max_epsilon", 0.0, "Epsilon of the min-max normalisations (original: none).",
    lower_bound=0.0)
LR_HALVE_EVERY = flags.DEFINE_integer(
    "lr_halve_every", 100, "Halve both learning rates every N epochs (the original: 100).",
    lower_bound=1)
BATCH_NORM_STATISTICS = flags.DEFINE_enum(
    "batch_norm_statistics", "attended", ["attended", "both_passes"],
    "Which passes update the trunk's moving batch-norm statistics, which inference (codes, "
    "export) uses: attended (pass a alone: the images inference sees) or both_passes (the "
    "attended and the raw pass blended, as this port did before 2026-12-06).")
flags.register_validator("width_multiplier", lambda v: v > 0,
                         message="--width_multiplier must be > 0")
exits.bound_flag("num_bits", exits.MAX_BITS, exits.WHY_BITS)
exits.bound_flag("width_multiplier", exits.MAX_WIDTH_MULTIPLIER, exits.WHY_WIDTH)
exits.bound_flag("lr_halve_every", exits.MAX_EPOCHS, "longer than any run")
for _name in ("quantization_weight", "margin", "weight_decay", "min_max_epsilon"):
    exits.finite_flag(_name)
flags.adopt_module_key_flags(cli)


def make_method():
    """The DDAH method the flags describe (imports TensorFlow)."""
    from ddah_tf.method import DDAH

    return DDAH(num_bits=NUM_BITS.value, width_multiplier=WIDTH_MULTIPLIER.value,
                quantization_weight=QUANTIZATION_WEIGHT.value, margin=MARGIN.value,
                weight_decay=WEIGHT_DECAY.value,
                include_skip_batchnorms=INCLUDE_SKIP_BATCHNORMS.value,
                unused_bn3=UNUSED_BN3.value, min_max_epsilon=MIN_MAX_EPSILON.value,
                lr_halve_every=LR_HALVE_EVERY.value,
                batch_norm_statistics=BATCH_NORM_STATISTICS.value)


main = cli.training_main(make_method)


def run() -> None:
    """Console-script entry point."""
    cli.run_app(main)


if __name__ == "__main__":
    run()
