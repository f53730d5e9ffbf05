"""Train DDCH (Fu, Wang, Tang, PRCV 2021) with the shared loop.

    python -m ddch_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/ddch
    python -m ddch_tf.train --dataset facescrub --data_dir data --model_dir runs/ddch_fs

Model flags come from the method's settings (ddch_tf/settings.py); data, loop and
evaluation flags are shared with DCBH (common/cli/train_flags.py). Re-running with the
same --model_dir resumes.
"""

from common.cli.train_flags import method_command

main, run = method_command("ddch", __name__)

if __name__ == "__main__":
    run()
