"""``python -m common.data.convert``: your own photos -> a data set (common/cli/convert.py)."""

from common.cli.convert import main, run  # noqa: F401 (the command's entry points)

if __name__ == "__main__":
    run()
