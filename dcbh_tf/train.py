"""Train DCBH (Jang et al., ACCV 2018) with the shared loop.

    python -m dcbh_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/dcbh
    python -m dcbh_tf.train --dataset facescrub --data_dir data --model_dir runs/dcbh_fs

Model flags come from the method's settings (dcbh_tf/settings.py); data, loop and
evaluation flags are shared (common/cli/train_flags.py); ``--helpshort`` lists both.
Re-running with the same --model_dir resumes.
"""

from common.cli.train_flags import method_command

main, run = method_command("dcbh", __name__)

if __name__ == "__main__":
    run()
