"""Files and folders that appear whole or not at all, with the permissions ``mkdir`` gives.

Why one module: checkpoints, run files, exports and generated data sets all write
through a temporary name and rename into place, and all must end up readable like any
other output of the user (``tempfile`` creates 0600 files and 0700 folders).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Any

JSON_TMP_SUFFIX = ".json-tmp"


def _fresh_name(parent: str, prefix: str, suffix: str = "") -> str:
    """A path in ``parent`` that no one uses yet (random, as ``tempfile`` names its files)."""
    return os.path.join(parent, f"{prefix}{secrets.token_hex(6)}{suffix}")


def fsync_path(path: str) -> None:
    """fsync a file or a folder.

    A file's failure is raised: an fsync that reports EIO, ENOSPC or EDQUOT means the data
    may not be on disk, and the callers are about to publish this copy and delete the
    previous one. A folder's is best effort (not every OS or filesystem syncs folders).
    """
    is_dir = os.path.isdir(path)
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if is_dir else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        if is_dir:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not is_dir:
            raise
    finally:
        os.close(fd)


def make_temp_dir(prefix: str, parent: str) -> str:
    """A new folder ``parent/<prefix><random>`` with the mode ``mkdir`` gives (0777 less the
    umask, applied by the kernel), not ``tempfile.mkdtemp``'s 0700."""
    while True:
        path = _fresh_name(parent, prefix)
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON to ``path`` so that readers see the old or the new file, never a part."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    while True:  # mode 0666 less the umask, as open() gives (mkstemp would give 0600)
        tmp = _fresh_name(folder, f".{os.path.basename(path)}.", JSON_TMP_SUFFIX)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
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
