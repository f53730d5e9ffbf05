"""The flags that name a finished run and its state: shared by ``evaluate`` and ``export``.

Kept apart so that each command defines only the flags it reads (absl flags are global:
``export --helpshort`` lists no evaluation flags).
"""

from __future__ import annotations

from absl import flags

MODEL_DIR = flags.DEFINE_string("model_dir", None, "Run folder written by the train command.")
CHECKPOINT = flags.DEFINE_enum(
    "checkpoint", "best_map", ["best_map", "best_loss", "last"],
    "Which saved state: best_map (highest evaluated mAP), best_loss (lowest epoch train "
    "loss, the original's choice) or last.")


def key_flags_for(module: str, names: tuple[str, ...]) -> None:
    """Make flags ``names`` (and these two) key flags of ``module``, a command's
    ``__name__``, so that its ``--helpshort`` lists them (absl names a main module by its
    path)."""
    import sys

    shown = sys.argv[0] if module == "__main__" else module
    for name in ("model_dir", "checkpoint", *names):
        flags.FLAGS.register_key_flag_for_module(shown, flags.FLAGS[name])
