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
                           returncode: int = 2) -> str:
    """The command stopped with exit ``returncode`` and exactly one stderr line starting
    with "error", the last one, of the form ``error: ...`` and holding ``message``; no
    traceback, and ``model_dir`` not created. Returns that line.

    Only lines starting with "error" count: the commands' plain log lines ("loaded ...: 12
    images") may come before the error line, on stderr as logging is, and may mention the
    word (a folder named errors/)."""
    assert result.returncode == returncode, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-2000:]
    assert errors[0].startswith("error: "), errors[0]
    assert message in errors[0], errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not os.path.exists(model_dir)  # rejected before anything was written
    return errors[0]
