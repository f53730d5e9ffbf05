"""Evaluate a DFH run's checkpoint (test split as queries, train split as database).

    python -m dfh_tf.evaluate --model_dir runs/dfh [--checkpoint best_loss] [--hamming legacy]

The same as ``python -m common.cli.evaluate``, which serves every method, but refuses a
run of another method. Flags: common/cli/evaluate.py.
"""

from common.cli.evaluate import command

main, run = command("dfh", __name__)

if __name__ == "__main__":
    run()
