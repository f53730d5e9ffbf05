"""Evaluate a DAGH run's checkpoint (test split as queries, train split as database).

    python -m dagh_tf.evaluate --model_dir runs/dagh [--checkpoint best_loss] [--hamming legacy]

Codes are sign(relaxed_codes), the discrete hash layer's output, in inference mode
(moving batch-norm statistics). Flags: common/saved_run_cli.py.
"""

from common import saved_run_cli

main = saved_run_cli.evaluate_main("dagh_tf.method", "DAGH")


def run() -> None:
    """Console-script entry point."""
    saved_run_cli.run_app(main)


if __name__ == "__main__":
    run()
