"""Export a DDCH run as a SavedModel serving binary codes.

    python -m ddch_tf.export --model_dir runs/ddch --export_dir exports/ddch [--checkpoint best_map]

The same as ``python -m common.cli.export``, which serves every method (its docstring
describes the SavedModel), but refuses a run of another method. Flags: common/cli/export.py.
"""

from common.cli.export import command

main, run = command("ddch", __name__)

if __name__ == "__main__":
    run()
