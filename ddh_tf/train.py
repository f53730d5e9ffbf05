"""Train DDH (Lin, Li, Tang, IJCAI 2017) with the shared loop.

    python -m ddh_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/ddh
    python -m ddh_tf.train --dataset facescrub --data_dir data --epochs 200 --shuffle

Model flags are defined here; data, loop and evaluation flags are shared (common/cli.py).
The original trained 200 epochs of batch 256 with Adam (lr 1e-3, epsilon 1e-8),
reshuffled every epoch: pass --epochs 200 --shuffle (the shared defaults, 2000 epochs in
file order, are DCBH's). Re-running with the same --model_dir resumes.
"""

from __future__ import annotations

from absl import flags

from common import cli, exits

NUM_BITS = flags.DEFINE_integer("num_bits", 48, "Code length in bits.", lower_bound=1)
SPLIT_NUM = flags.DEFINE_integer("split_num", 4, "Units per bit entering divide-and-encode.",
                                 lower_bound=1)
QUANTIZATION_WEIGHT = flags.DEFINE_float("quantization_weight", 0.01,
                                         "Weight of mean(| |h| - 1 |).", lower_bound=0.0)
WEIGHT_DECAY = flags.DEFINE_enum("weight_decay", "l2", ["l2", "none"],
                                 "l2: the original's Keras-1 l2 on every kernel; none.")
WEIGHT_DECAY_SCALE = flags.DEFINE_float("weight_decay_scale", 1e-4,
                                        "Keras-1 l2 coefficient c (adds c * sum(w^2)).",
                                        lower_bound=0.0)
exits.bound_flag("num_bits", exits.MAX_BITS, exits.WHY_BITS)
exits.bound_flag("split_num", exits.MAX_UNITS_PER_BIT, exits.WHY_UNITS)
for _name in ("quantization_weight", "weight_decay_scale"):
    exits.finite_flag(_name)
flags.adopt_module_key_flags(cli)


def make_method():
    """The DDH method the flags describe (imports TensorFlow)."""
    from ddh_tf.method import DDH

    return DDH(num_bits=NUM_BITS.value, split_num=SPLIT_NUM.value,
               quantization_weight=QUANTIZATION_WEIGHT.value, weight_decay=WEIGHT_DECAY.value,
               weight_decay_scale=WEIGHT_DECAY_SCALE.value)


main = cli.training_main(make_method)


def run() -> None:
    """Console-script entry point."""
    cli.run_app(main)


if __name__ == "__main__":
    run()
