"""Evaluate a DFH run's checkpoint (test split as queries, train split as database).

    python -m dfh_tf.evaluate --model_dir runs/dfh [--checkpoint best_loss] [--hamming legacy]

Codes are sign(relaxed_codes), the hash layer's tanh output, in inference mode
(moving batch-norm statistics). Flags: common/saved_run_cli.py.
"""

from common import saved_run_cli

main = saved_run_cli.evaluate_main("dfh_tf.method", "DFH")


def run() -> None:
    """Console-script entry point."""
    saved_run_cli.run_app(main)


if __name__ == "__main__":
    run()
