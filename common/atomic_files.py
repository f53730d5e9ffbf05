"""Files and folders that appear whole or not at all, with the permissions ``mkdir`` gives.

Why one module: checkpoints, run files, exports and generated data sets all write
through a temporary name and rename into place, and all must end up readable like any
other output of the user (``tempfile`` creates 0600 files and 0700 folders).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

JSON_TMP_SUFFIX = ".json-tmp"


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: str) -> None:
    """fsync a file or a folder (folders: best effort, not every OS allows it)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_temp_dir(prefix: str, parent: str) -> str:
    """``tempfile.mkdtemp`` with the mode ``mkdir`` would give (0777 & ~umask), not 0700."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(path, 0o777 & ~current_umask())
    return path


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON to ``path`` so that readers see the old or the new file, never a part."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=JSON_TMP_SUFFIX,
                               dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_path(folder)


def remove_stale_json_temps(folder: str) -> None:
    """Delete temporary files a killed :func:`write_json_atomic` left in ``folder``."""
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if entry.startswith(".") and entry.endswith(JSON_TMP_SUFFIX) and os.path.isfile(path):
            with contextlib.suppress(OSError):
                os.remove(path)
