"""Evaluate a DCBH run's checkpoint (test split as queries, train split as database).

    python -m dcbh_tf.evaluate --model_dir runs/dcbh [--checkpoint best_loss] [--hamming legacy]

Flags: common/saved_run_cli.py.
"""

from common import saved_run_cli

main = saved_run_cli.evaluate_main("dcbh_tf.method", "DCBH")


def run() -> None:
    """Console-script entry point."""
    saved_run_cli.run_app(main)


if __name__ == "__main__":
    run()
