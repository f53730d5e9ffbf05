"""Export a DDAH run as a SavedModel serving binary codes.

    python -m ddah_tf.export --model_dir runs/ddah --export_dir exports/ddah [--checkpoint best_map]

The same as ``python -m common.cli.export``, which serves every method (its docstring
describes the SavedModel), but refuses a run of another method. Flags: common/cli/export.py.
"""

from common.cli.export import command

main, run = command("ddah", __name__)

if __name__ == "__main__":
    run()
