"""Train DAGH (Xiong et al., ICMR 2020, built from its abstract on DDAH) with the shared loop.

    python -m dagh_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/dagh
    python -m dagh_tf.train --dataset facescrub --data_dir data --epochs 1000 --shuffle

Model flags are defined here; data, loop and evaluation flags are shared (common/cli.py).
DAGH trains as DDAH does (Adam lr 1e-3 halved every 100 epochs, coupled L2 1e-4, 1000
epochs of batch 256, reshuffled: pass --epochs 1000 --shuffle). The ablation switches
(--attention parallel, --hash_layer tanh, --identity_head softmax) each remove one of
DAGH's parts (dagh_tf/README.md). Re-running with the same --model_dir resumes.
"""

from __future__ import annotations

from absl import flags

from common import cli, exits

NUM_BITS = flags.DEFINE_integer("num_bits", 48, "Code length in bits.", lower_bound=1)
WIDTH_MULTIPLIER = flags.DEFINE_float(
    "width_multiplier", 1.0, "Scales every width (1.0 = DDAH's; smaller for quick tests).")
ATTENTION = flags.DEFINE_enum(
    "attention", "cascade", ["cascade", "parallel"],
    "cascade: channel then spatial attention, stage after stage (DAGH); parallel: DDAH's "
    "side-by-side channel attentions (ablation).")
HASH_LAYER = flags.DEFINE_enum(
    "hash_layer", "discrete", ["discrete", "tanh"],
    "discrete: binary codes in the forward pass (DAGH); tanh: relaxed codes (ablation).")
IDENTITY_HEAD = flags.DEFINE_enum(
    "identity_head", "discrete", ["discrete", "softmax"],
    "discrete: Hamming similarity to binary identity centers with a margin (DAGH); "
    "softmax: a dense classifier and cross-entropy (ablation).")
SCALE = flags.DEFINE_float("scale", None, "s of the discrete identity head's logits "
                                          "(default: num_bits / 3, 16 at 48 bits).")
MARGIN = flags.DEFINE_float("margin", 0.2, "m of the discrete identity loss (similarity "
                                           "units: m * bits / 2 bits).", lower_bound=0.0)
BACKWARD = flags.DEFINE_enum("backward", "identity", ["identity", "clipped"],
                             "The discrete hash layer's backward: identity (straight-through) "
                             "or clipped (zero where |h| > 1).")
QUANTIZATION_WEIGHT = flags.DEFINE_float(
    "quantization_weight", 1e-3, "Weight of mean_i sum_k | |h_ik| - 1 | (DDAH's).",
    lower_bound=0.0)
WEIGHT_DECAY = flags.DEFINE_float(
    "weight_decay", 1e-4, "Coupled L2 of the optimiser (grad += rate * w; 0: none).",
    lower_bound=0.0)
GATE_KERNEL = flags.DEFINE_integer("gate_kernel", 3, "Kernel of the cascade's spatial gates.",
                                   lower_bound=1, upper_bound=7)
MIN_MAX_EPSILON = flags.DEFINE_float(
    "min_max_epsilon", 0.0, "Epsilon of DDAH's min-max normalisations (DDAH's: none).",
    lower_bound=0.0)
LR_HALVE_EVERY = flags.DEFINE_integer(
    "lr_halve_every", 100, "Halve the learning rate every N epochs (DDAH's: 100).",
    lower_bound=1)
PASSES = flags.DEFINE_enum(
    "passes", "1", ["1", "2"],
    "1: DAGH as its abstract describes it (one pass, one Adam); 2: trained as DDAH is, on the "
    "attended and on the raw image with two Adams and DDAH's hinge (dagh_tf/README.md).")
flags.register_validator("width_multiplier", lambda v: v > 0,
                         message="--width_multiplier must be > 0")
flags.register_validator("scale", lambda v: v is None or v > 0,
                         message="--scale must be > 0")
flags.register_validator("gate_kernel", lambda v: v % 2 == 1,
                         message="--gate_kernel must be odd (centred 'same' padding)")
flags.register_validator("margin", lambda v: v < 2, message="--margin must be < 2")
exits.bound_flag("num_bits", exits.MAX_BITS, exits.WHY_BITS)
exits.bound_flag("width_multiplier", exits.MAX_WIDTH_MULTIPLIER, exits.WHY_WIDTH)
exits.bound_flag("lr_halve_every", exits.MAX_EPOCHS, "longer than any run")
for _name in ("scale", "margin", "quantization_weight", "weight_decay", "min_max_epsilon"):
    exits.finite_flag(_name)
flags.adopt_module_key_flags(cli)


def make_method():
    """The DAGH method the flags describe (imports TensorFlow)."""
    from dagh_tf.method import DAGH

    return DAGH(num_bits=NUM_BITS.value, width_multiplier=WIDTH_MULTIPLIER.value,
                attention=ATTENTION.value, hash_layer=HASH_LAYER.value,
                identity_head=IDENTITY_HEAD.value, scale=SCALE.value, margin=MARGIN.value,
                backward=BACKWARD.value, quantization_weight=QUANTIZATION_WEIGHT.value,
                weight_decay=WEIGHT_DECAY.value, gate_kernel=GATE_KERNEL.value,
                min_max_epsilon=MIN_MAX_EPSILON.value, lr_halve_every=LR_HALVE_EVERY.value,
                passes=int(PASSES.value))


main = cli.training_main(make_method)


def run() -> None:
    """Console-script entry point."""
    cli.run_app(main)


if __name__ == "__main__":
    run()
