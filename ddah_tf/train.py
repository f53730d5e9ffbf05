"""Train DDAH (Xiong et al., PRICAI 2019) with the shared loop.

    python -m ddah_tf.train --dataset synthetic --epochs 2 --model_dir /tmp/ddah
    python -m ddah_tf.train --dataset facescrub --data_dir data --epochs 1000 --shuffle

Model flags come from the method's settings (ddah_tf/settings.py); data, loop and
evaluation flags are shared (common/cli/train_flags.py).
The original trained 1000 epochs of batch 256, reshuffled every epoch, with two Adams
(lr 1e-3 halved every 100 epochs, epsilon 1e-8, coupled L2 1e-4): pass --epochs 1000
--shuffle (the shared defaults, 2000 epochs in file order, are DCBH's); --learning_rate
is the schedule's base. Re-running with the same --model_dir resumes.
"""

from common.cli.train_flags import method_command

main, run = method_command("ddah", __name__)

if __name__ == "__main__":
    run()
