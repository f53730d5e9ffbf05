"""The flags that name a finished run and its state: shared by ``evaluate`` and ``export``,
and the check of ``--model_dir`` both make before TensorFlow loads.

Kept apart so that each command defines only the flags it reads (absl flags are global:
``export --helpshort`` lists no evaluation flags).
"""

from __future__ import annotations

import os

from absl import flags

from common.cli import checks
from common.cli.runner import fail
from common.runs.run_config import RunConfigError, read_run_config

MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run folder written by the train command.")
CHECKPOINT = flags.DEFINE_enum(
    "checkpoint", "best_map", ["best_map", "best_loss", "last"],
    "Which saved state: best_map (highest evaluated mAP), best_loss (lowest epoch train "
    "loss, the original's choice) or last.")


def check_model_dir() -> str:
    """``--model_dir``, refused with one ``error:`` line (exit 2) unless it names a run
    folder: given, a UTF-8 name, an existing folder (not a file) holding a readable
    ``run_config.json``. Checked before TensorFlow is imported (seconds), so that such a
    mistake is reported at once; whether the run is of the command's method is checked
    when it is loaded."""
    path = MODEL_DIR.value
    if not path:
        fail("--model_dir is required (the folder a train command wrote)")
    checks.check_utf8_name("model_dir", path)
    if os.path.lexists(path) and not os.path.isdir(path):
        fail(f"{path}: is a file, not a run folder (--model_dir names the folder a train "
             "command wrote)")
    try:
        read_run_config(path)  # no TensorFlow: a missing folder or run_config.json
    except RunConfigError as exc:
        fail(str(exc))
    return path


def key_flags_for(module: str, names: tuple[str, ...]) -> None:
    """Make flags ``names`` (and these two) key flags of ``module``, a command's
    ``__name__``, so that its ``--helpshort`` lists them (absl names a main module by its
    path)."""
    import sys

    shown = sys.argv[0] if module == "__main__" else module
    for name in ("model_dir", "checkpoint", *names):
        flags.FLAGS.register_key_flag_for_module(shown, flags.FLAGS[name])
