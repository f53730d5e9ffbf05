"""Train DFH (Wang, 2021 thesis, built from its abstract) with the shared loop.

    python -m dfh_tf.train --dataset synthetic --epochs 30 --feature_epochs 10 --model_dir /tmp/dfh
    python -m dfh_tf.train --dataset folder --train_dir AUGMENTED/train --test_dir TEST ...

Model flags are defined here; data, loop and evaluation flags are shared (common/cli.py).
Two stages: --feature_epochs epochs of the feature classifier alone, then the codes
(metric hash loss with sign control, quadratic quantization, distillation from the
feature classifier). The ablation switches (--hash_loss cross_entropy, --quantization
first_order, --distillation_weight 0) each replace one part (dfh_tf/README.md). To train
on GAN-augmented faces, write the split with ``python -m dfh_tf.gan.augment`` and pass
it as --train_dir. Re-running with the same --model_dir resumes, in whichever stage.
"""

from __future__ import annotations

from absl import flags

from common import cli, exits

NUM_BITS = flags.DEFINE_integer("num_bits", 48, "Code length in bits.", lower_bound=1)
WIDTH_MULTIPLIER = flags.DEFINE_float(
    "width_multiplier", 1.0, "Backbone width (1.0 = DCBH's; smaller for quick tests).")
FEATURE_UNITS = flags.DEFINE_integer("feature_units", 512, "Width of the feature layer.",
                                     lower_bound=1)
FEATURE_EPOCHS = flags.DEFINE_integer(
    "feature_epochs", 50, "Stage 1: epochs of the feature classifier alone before the codes "
    "are trained (0: one stage). Must be below --epochs.", lower_bound=0)
HASH_LOSS = flags.DEFINE_enum(
    "hash_loss", "metric", ["metric", "cross_entropy"],
    "metric: margin pair loss plus per-bit sign control towards identity hash centers (DFH); "
    "cross_entropy: a classifier on the codes (ablation).")
PAIR_MARGIN = flags.DEFINE_float("pair_margin", 0.5, "Margin of the pair loss, in Hamming "
                                 "distance / bits (DSH's 2K on squared distances).")
SIGN_WEIGHT = flags.DEFINE_float("sign_weight", 1.0, "Weight of the sign-control term.",
                                 lower_bound=0.0)
QUANTIZATION = flags.DEFINE_enum(
    "quantization", "quadratic", ["quadratic", "first_order"],
    "quadratic: mean (|h| - 1)^2 (DFH); first_order: mean | |h| - 1 | (ablation).")
QUANTIZATION_WEIGHT = flags.DEFINE_float("quantization_weight", 0.1,
                                         "Weight of the quantization term.", lower_bound=0.0)
DISTILLATION_WEIGHT = flags.DEFINE_float(
    "distillation_weight", 1.0, "Weight of the distillation from the feature classifier to "
    "the code classifier (0: none, ablation).", lower_bound=0.0)
TEMPERATURE = flags.DEFINE_float("temperature", 4.0, "Distillation temperature T.")
CENTER_SEED = flags.DEFINE_integer("center_seed", 0, "Seed of the identity hash centers.",
                                   lower_bound=0)
flags.register_validator("width_multiplier", lambda v: v > 0,
                         message="--width_multiplier must be > 0")
flags.register_validator("pair_margin", lambda v: 0 < v <= 1,
                         message="--pair_margin must be in (0, 1]")
flags.register_validator("temperature", lambda v: v > 0, message="--temperature must be > 0")
flags.register_multi_flags_validator(
    ["feature_epochs", "epochs"], lambda v: v["feature_epochs"] < v["epochs"],
    message="--feature_epochs must be below --epochs, or the codes are never trained")
exits.bound_flag("num_bits", exits.MAX_BITS, exits.WHY_BITS)
exits.bound_flag("width_multiplier", exits.MAX_WIDTH_MULTIPLIER, exits.WHY_WIDTH)
exits.bound_flag("feature_units", exits.MAX_HIDDEN_UNITS, exits.WHY_UNITS)
exits.bound_flag("center_seed", exits.MAX_SEED, "numpy's seed range")
for _name in ("pair_margin", "sign_weight", "quantization_weight", "distillation_weight",
              "temperature"):
    exits.finite_flag(_name)
flags.adopt_module_key_flags(cli)


def make_method():
    """The DFH method the flags describe (imports TensorFlow)."""
    from dfh_tf.method import DFH

    return DFH(num_bits=NUM_BITS.value, width_multiplier=WIDTH_MULTIPLIER.value,
               feature_units=FEATURE_UNITS.value, feature_epochs=FEATURE_EPOCHS.value,
               hash_loss=HASH_LOSS.value, pair_margin=PAIR_MARGIN.value,
               sign_weight=SIGN_WEIGHT.value, quantization=QUANTIZATION.value,
               quantization_weight=QUANTIZATION_WEIGHT.value,
               distillation_weight=DISTILLATION_WEIGHT.value, temperature=TEMPERATURE.value,
               center_seed=CENTER_SEED.value)


main = cli.training_main(make_method)


def run() -> None:
    """Console-script entry point."""
    cli.run_app(main)


if __name__ == "__main__":
    run()
