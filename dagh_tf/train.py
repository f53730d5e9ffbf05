"""Train DAGH (Xiong et al., ICMR 2020, built from its abstract on DDAH) with the shared loop.

    python -m dagh_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/dagh
    python -m dagh_tf.train --dataset facescrub --data_dir data --epochs 1000 --shuffle

Model flags come from the method's settings (dagh_tf/settings.py); data, loop and
evaluation flags are shared (common/cli/train_flags.py).
DAGH trains as DDAH does (Adam lr 1e-3 halved every 100 epochs, coupled L2 1e-4, 1000
epochs of batch 256, reshuffled: pass --epochs 1000 --shuffle). The ablation switches
(--attention parallel, --hash_layer tanh, --identity_head softmax) each remove one of
DAGH's parts (dagh_tf/README.md). Re-running with the same --model_dir resumes.
"""

from common.cli.train_flags import method_command

main, run = method_command("dagh", __name__)

if __name__ == "__main__":
    run()
