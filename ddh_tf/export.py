"""Export a DDH run as a SavedModel serving binary codes.

    python -m ddh_tf.export --model_dir runs/ddh --export_dir exports/ddh [--checkpoint best_map]

The same as ``python -m common.cli.export``, which serves every method (its docstring
describes the SavedModel), but refuses a run of another method. Flags: common/cli/export.py.
"""

from common.cli.export import command

main, run = command("ddh", __name__)

if __name__ == "__main__":
    run()
