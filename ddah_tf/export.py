"""Export a DDAH run as a SavedModel serving binary codes.

    python -m ddah_tf.export --model_dir runs/ddah --export_dir exports/ddah [--checkpoint best_map]

The same signature as every method's: ``serving_default`` takes ``images`` (N, 32, 32, 3)
uint8 and returns ``codes`` (int8 +-1), ``packed`` (uint8, LSB first) and ``relaxed``
(float32), computed by pass a only (attention branch + trunk on the attended image,
``ddah_tf.model.attended_pass_model``); the raw-image pass, needed only for training, is
not exported. The train split's normalisation is baked in (see common/export.py);
``model.keras`` (the attended-pass model) is saved beside it. Flags:
common/saved_run_cli.py.
"""

from common import saved_run_cli

main = saved_run_cli.export_main("ddah_tf.method", "DDAH")


def run() -> None:
    """Console-script entry point."""
    saved_run_cli.run_app(main)


if __name__ == "__main__":
    run()
