"""Train DFH (Wang, 2021 thesis, built from its abstract) with the shared loop.

    python -m dfh_tf.train --dataset synthetic --epochs 30 --feature_epochs 10 --model_dir /tmp/dfh
    python -m dfh_tf.train --dataset folder --train_dir AUGMENTED/train --test_dir TEST ...

Model flags come from the method's settings (dfh_tf/settings.py); data, loop and
evaluation flags are shared (common/cli/train_flags.py).
Two stages: --feature_epochs epochs of the feature classifier alone, then the codes
(metric hash loss with sign control, quadratic quantization, distillation from the
feature classifier). The ablation switches (--hash_loss cross_entropy, --quantization
first_order, --distillation_weight 0) each replace one part (dfh_tf/README.md). To train
on GAN-augmented faces, write the split with ``python -m dfh_tf.gan.augment`` and pass
it as --train_dir. Re-running with the same --model_dir resumes, in whichever stage.
"""

from common.cli.train_flags import method_command

main, run = method_command("dfh", __name__)

if __name__ == "__main__":
    run()
