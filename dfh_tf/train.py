"""Train DFH (Wang, 2021 thesis, built from its abstract) with the shared loop.

    python -m dfh_tf.train --dataset synthetic --epochs 30 --feature_epochs 10 --model_dir /tmp/dfh
    python -m dfh_tf.train --dataset folder --train_dir TRAIN --test_dir TEST \
        --extra_train_dir VARIANTS/train --validation_fraction 0.1 ...

Model flags come from the method's settings (dfh_tf/settings.py); data, loop and
evaluation flags are shared (common/cli/train_flags.py).
Two stages: --feature_epochs epochs of the feature classifier alone, then the codes
(metric hash loss with sign control, quadratic quantization, distillation from the
feature classifier). The ablation switches (--hash_loss cross_entropy, --quantization
first_order, --distillation_weight 0) each replace one part (dfh_tf/README.md). To train
on GAN-augmented faces, write the variants with ``python -m dfh_tf.gan.augment
--variants_only`` and pass them as --extra_train_dir beside the original --train_dir, so
that the database and the validation split stay the original faces (an augmented split
given as --train_dir would make variants database items and validation candidates).
Re-running with the same --model_dir resumes, in whichever stage.
"""

from common.cli.train_flags import method_command

main, run = method_command("dfh", __name__)

if __name__ == "__main__":
    run()
