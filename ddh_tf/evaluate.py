"""Evaluate a DDH run's checkpoint (test split as queries, train split as database).

    python -m ddh_tf.evaluate --model_dir runs/ddh [--checkpoint best_loss] [--hamming legacy]

The same as ``python -m common.cli.evaluate``, which serves every method, but refuses a
run of another method. Flags: common/cli/evaluate.py.
"""

from common.cli.evaluate import command

main, run = command("ddh", __name__)

if __name__ == "__main__":
    run()
