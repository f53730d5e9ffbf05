"""Evaluate a DAGH run's checkpoint (test split as queries, train split as database).

    python -m dagh_tf.evaluate --model_dir runs/dagh [--checkpoint best_loss] [--hamming legacy]

The same as ``python -m common.cli.evaluate``, which serves every method, but refuses a
run of another method. Flags: common/cli/evaluate.py.
"""

from common.cli.evaluate import command

main, run = command("dagh", __name__)

if __name__ == "__main__":
    run()
