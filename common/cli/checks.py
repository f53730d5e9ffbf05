"""Checks of command-line values made while flags are parsed, before any work.

Why here: every entry point refuses the same mistakes (values that would exhaust memory or
never end, NaN, a folder where a file is wanted) the same way, in well under a second,
before TensorFlow is imported; :mod:`common.cli.runner` turns them into one ``error:`` line.
"""

from __future__ import annotations

import math
import os

from absl import flags

from common.cli.runner import fail
from common.io.names import printable

# Upper bounds of the flags that size memory or work, checked while flags are parsed.
MAX_BITS = 1024               # the methods are meant for 12..48 bits
MAX_UNITS_PER_BIT = 64        # DCBH --code_length, DDH --split_num (the papers: 4..6)
MAX_HIDDEN_UNITS = 8192       # DDCH --feature_units, --hash_hidden_units (paper: 512)
MAX_WIDTH_MULTIPLIER = 8.0    # backbone channels x8 = 4096 in its last block
MAX_BATCH_SIZE = 65536
MAX_EPOCHS = 10**6
MAX_TOP_K = 10**7             # more than any database here (YouTube Faces: 63,800)
MAX_SEED = 2**32 - 1          # numpy's global seed range (keras.utils.set_random_seed)
BYTES_PER_IMAGE = 12 * 1024   # one float32 32x32x3 image in memory
WHY_BITS = "the methods are meant for 12 to 48 bits; wider codes need layers that exhaust memory"
WHY_UNITS = "a wider layer exhausts memory"
WHY_WIDTH = "the original is 1.0; a wider backbone exhausts memory"
# A validation seed without a fraction would be silently ignored (no split is drawn).
SEED_WITHOUT_FRACTION = ("--validation_seed needs --validation_fraction > 0: without it no "
                         "validation split is drawn")


def check_no_arguments(argv: list[str]) -> None:
    """Reject positional arguments (absl passes them through to ``main``)."""
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (all settings are --flags)")


# ------------------------------------------------------------ bounds, checked early
def bound_flag(name: str, upper: float, why: str) -> None:
    """Refuse ``--name`` above ``upper`` at parse time, saying ``why`` (exit 2)."""
    shown = str(int(upper)) if float(upper).is_integer() else repr(upper)
    flags.register_validator(name, lambda v: v is None or v <= upper,
                             message=f"--{name} must be <= {shown} ({why})")


def finite_flag(name: str) -> None:
    """Refuse ``--name nan`` / ``inf`` at parse time (they only surface as a NaN loss)."""
    flags.register_validator(name, lambda v: v is None or math.isfinite(v),
                             message=f"--{name} must be a finite number")


def physical_memory_bytes() -> int | None:
    """This machine's RAM (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def image_memory_error(images: int) -> str | None:
    """Why ``images`` float32 images would not fit in half of this machine's memory."""
    memory = physical_memory_bytes()
    need = images * BYTES_PER_IMAGE
    if memory is None or need <= memory // 2:
        return None
    return (f"{images:,} images need about {need / 2**30:,.1f} GiB in memory (12 KiB each), "
            f"more than half of this machine's {memory / 2**30:,.1f} GiB")


def check_utf8_name(flag: str, path: str | None, use: str = "read") -> None:
    """Refuse a path flag whose name is not UTF-8 (TensorFlow cannot ``use`` it), naming it."""
    if not path:
        return
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, kept as surrogates by Python
        fail(f"--{flag} {printable(path)}: the folder's name is not valid UTF-8, which TensorFlow "
             f"cannot {use}; rename it")


def check_folder_flag(flag: str, path: str | None) -> None:
    """Refuse a folder flag that names a file or lies under one, or whose name is not
    UTF-8 (TensorFlow cannot write checkpoints or SavedModels there), before any work."""
    if not path:
        return
    check_utf8_name(flag, path, "write into")
    if os.path.lexists(path) and not os.path.isdir(path):
        fail(f"--{flag} {path}: exists and is not a folder")
    _check_parents(flag, path)


def check_file_flag(flag: str, path: str | None) -> None:
    """Refuse an output-file flag that names a folder or lies under a file."""
    if not path:
        return
    if os.path.isdir(path):
        fail(f"--{flag} {path}: is a folder, not a file")
    _check_parents(flag, path)


def _check_parents(flag: str, path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        fail(f"--{flag} {path}: {parent} is a file, not a folder")
