"""Evaluate a DDCH run's checkpoint (test split as queries, train split as database).

    python -m ddch_tf.evaluate --model_dir runs/ddch [--checkpoint best_loss] [--hamming legacy]

Flags: common/saved_run_cli.py.
"""

from common import saved_run_cli

main = saved_run_cli.evaluate_main("ddch_tf.method", "DDCH")


def run() -> None:
    """Console-script entry point."""
    saved_run_cli.run_app(main)


if __name__ == "__main__":
    run()
