"""``python -m common.synthetic``: write the synthetic identity set (common/cli/synthetic.py)."""

from common.cli.synthetic import main, run  # noqa: F401 (the command's entry points)

if __name__ == "__main__":
    run()
