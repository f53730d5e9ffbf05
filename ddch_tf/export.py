"""Export a DDCH run as a SavedModel serving binary codes.

    python -m ddch_tf.export --model_dir runs/ddch --export_dir exports/ddch [--checkpoint best_map]

The signature ``serving_default`` takes ``images`` (N, 32, 32, 3) uint8 and returns
``codes`` (int8 +-1), ``packed`` (uint8, LSB first) and ``relaxed`` (float32); the
train split's normalisation is baked in (see common/export.py). ``model.keras`` is
saved beside it. Flags: common/saved_run_cli.py.
"""

from common import saved_run_cli

main = saved_run_cli.export_main("ddch_tf.method", "DDCH")


def run() -> None:
    """Console-script entry point."""
    saved_run_cli.run_app(main)


if __name__ == "__main__":
    run()
