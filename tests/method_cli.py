"""A method's command lines as a user runs them (``python -m dagh_tf.train ...``, in a new
process), and the one clear error line a bad flag must give: shared by the per-method
training tests, which otherwise each kept their own copy."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def run_cli(module: str, args: list[str], cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m module *args`` in ``cwd`` with this checkout on the path; output captured."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_clear_error(result: subprocess.CompletedProcess, message: str, model_dir, *,
                           returncode: int | None = 2, prefixed: bool = True) -> None:
    """The command stopped (exit ``returncode``; any non-zero one for None) with exactly one
    stderr line mentioning "error" (starting with ``error:`` where ``prefixed``), that line
    holding ``message``, no traceback, and ``model_dir`` not created."""
    if returncode is None:
        assert result.returncode != 0
    else:
        assert result.returncode == returncode, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    if prefixed:
        assert errors[0].startswith("error:"), result.stderr
    assert message in errors[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not os.path.exists(model_dir)  # rejected before anything was written
