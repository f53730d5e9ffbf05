"""Export a DDH run as a SavedModel serving binary codes.

    python -m ddh_tf.export --model_dir runs/ddh --export_dir exports/ddh [--checkpoint best_map]

The signature ``serving_default`` takes ``images`` (N, 32, 32, 3) uint8 and returns
``codes`` (int8 +-1), ``packed`` (uint8, LSB first) and ``relaxed`` (float32); the
train split's normalisation is baked in (see common/export.py). ``model.keras`` is
saved beside it.
"""

from __future__ import annotations

from absl import app

from common import saved_run_cli
from common.exits import check_no_arguments


def method_class():
    from ddh_tf.method import DDH
    return DDH


def main(argv: list[str]) -> None:
    check_no_arguments(argv)
    saved_run_cli.run_export(method_class)


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
