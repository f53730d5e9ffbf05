"""Train DDH (Lin, Li, Tang, IJCAI 2017) with the shared loop.

    python -m ddh_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/ddh
    python -m ddh_tf.train --dataset facescrub --data_dir data --epochs 200 --shuffle

Model flags come from the method's settings (ddh_tf/settings.py); data, loop and
evaluation flags are shared (common/cli/train_flags.py).
The original trained 200 epochs of batch 256 with Adam (lr 1e-3, epsilon 1e-8),
reshuffled every epoch: pass --epochs 200 --shuffle (the shared defaults, 2000 epochs in
file order, are DCBH's). Re-running with the same --model_dir resumes.
"""

from common.cli.train_flags import method_command

main, run = method_command("ddh", __name__)

if __name__ == "__main__":
    run()
