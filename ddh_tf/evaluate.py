"""Evaluate a DDH run's checkpoint (test split as queries, train split as database).

    python -m ddh_tf.evaluate --model_dir runs/ddh [--checkpoint best_loss] [--hamming legacy]
"""

from __future__ import annotations

from absl import app

from common import saved_run_cli
from common.exits import check_no_arguments
from ddh_tf.export import method_class


def main(argv: list[str]) -> None:
    check_no_arguments(argv)
    saved_run_cli.run_evaluate(method_class)


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
