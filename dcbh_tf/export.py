"""Export a DCBH run as a SavedModel serving binary codes.

    python -m dcbh_tf.export --model_dir runs/dcbh --export_dir exports/dcbh [--checkpoint best_map]

The same as ``python -m common.cli.export``, which serves every method (its docstring
describes the SavedModel), but refuses a run of another method. Flags: common/cli/export.py.
"""

from common.cli.export import command

main, run = command("dcbh", __name__)

if __name__ == "__main__":
    run()
