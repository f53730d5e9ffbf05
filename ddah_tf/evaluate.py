"""Evaluate a DDAH run's checkpoint (test split as queries, train split as database).

    python -m ddah_tf.evaluate --model_dir runs/ddah [--checkpoint best_loss] [--hamming legacy]

Codes are sign(relaxed_codes) of pass a (the attended image), in inference mode (moving
batch-norm statistics). Flags: common/saved_run_cli.py.
"""

from common import saved_run_cli

main = saved_run_cli.evaluate_main("ddah_tf.method", "DDAH")


def run() -> None:
    """Console-script entry point."""
    saved_run_cli.run_app(main)


if __name__ == "__main__":
    run()
