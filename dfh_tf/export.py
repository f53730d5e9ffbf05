"""Export a DFH run as a SavedModel serving binary codes.

    python -m dfh_tf.export --model_dir runs/dfh --export_dir exports/dfh [--checkpoint best_map]

The same signature as every method's: ``serving_default`` takes ``images`` (N, 32, 32, 3)
uint8 and returns ``codes`` (int8 +-1), ``packed`` (uint8, LSB first) and ``relaxed``
(float32). The train split's normalisation is baked in (see common/export.py);
``model.keras`` is saved beside it. Flags: common/saved_run_cli.py.
"""

from common import saved_run_cli

main = saved_run_cli.export_main("dfh_tf.method", "DFH")


def run() -> None:
    """Console-script entry point."""
    saved_run_cli.run_app(main)


if __name__ == "__main__":
    run()
