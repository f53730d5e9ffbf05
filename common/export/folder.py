"""Which folder an export may replace, and replacing it so that nothing is ever lost.

Why: ``--export_dir`` is replaced, so pointed at the wrong folder (a run, a parent of runs,
``.``) the old export code deleted it. The rules:

* Marker. ``export_info.json`` holds ``"format": "face-hashing-export/1"`` (:data:`FORMAT`).
  Exports written before the marker existed are recognised by an ``export_info.json`` with
  ``"signature"`` and ``"num_bits"`` next to a ``saved_model.pb``.
* Recognition. ``export_dir`` may be replaced only if it does not exist, is an empty folder,
  or is a previous export: the marker is there and the folder holds nothing but what an
  export writes (:data:`EXPORT_FILES`, ``variables/`` with ``variables.index`` and
  ``variables.data-*``, an empty ``assets/``), no symbolic links. A file, a symbolic link,
  the current directory or one of its parents, the filesystem root, or any other folder is
  refused with :class:`ExportDirError` (a ``ValueError``) before anything is written.
* Replacing. The new export is written into ``.NAME.tmp-<12 hex>`` beside ``export_dir``
  and swapped in by :mod:`common.io.folder_swap` (an atomic exchange where the OS has one;
  a previous export a kill left aside is put back first, by the next export or by
  :func:`common.export.loader.load_encoder`), which deletes of the replaced folder only
  what an export writes (:func:`export_owns`): a file someone put into ``export_dir``
  while the export ran survives, and the export stops with ``FolderChangedError``.
* Lock. An export holds ``fcntl.flock`` on ``.NAME.lock`` beside ``export_dir`` (removed
  when done); a second export to the same folder is refused (:class:`ExportBusyError`).
* Cleanup. Under that lock, stale ``.NAME.tmp-*`` / ``.NAME.old-*`` folders of this very
  ``export_dir`` (exact name pattern, real folders only) that a killed export left are
  cleaned (what an export writes in them; anything else is kept aside).
* Permissions. The export folder is made with ``mkdir(0o777)``, so the process umask
  applies exactly as for ``mkdir`` (umask 022 -> 0755), not ``mkdtemp``'s 0700.
Crash points (:func:`common.io.faults.crash_point`): ``export:aside`` (fallback only: the old
export renamed aside, the new one not yet in place), ``export:swapped`` (new export in
place, the old one not yet removed).
"""

from __future__ import annotations

import os
import re

from common.errors import ProjectError
from common.io import folder_swap, json_files
from common.io.folder_swap import (is_plain as _is_plain, put_back_newest_aside,
                                   siblings, summary as _summary, swap_in_place)
from common.io.locks import folder_lock

EXPORT_INFO = "export_info.json"
KERAS_FILE = "model.keras"
FORMAT_KEY = "format"
FORMAT = "face-hashing-export/1"
EXPORT_FILES = frozenset({"saved_model.pb", "fingerprint.pb", KERAS_FILE, EXPORT_INFO})
_VARIABLES_FILE = re.compile(r"variables\.(index|data-\d+-of-\d+)")


class ExportDirError(ProjectError, ValueError):
    """``--export_dir`` names a folder an export must not replace (or cannot use now)."""


class ExportBusyError(ExportDirError):
    """Another export to the same folder holds its lock."""


# --- which folders an export may replace ------------------------------------------------

def _label(path: str) -> str:
    """An entry's name as a listing shows it (folders end with ``/``)."""
    name = os.path.basename(path)
    return name + "/" if os.path.isdir(path) and not os.path.islink(path) else name


def _foreign_entries(folder: str) -> list[str]:
    """Entries of ``folder`` that an export does not write (labels, sorted)."""
    foreign = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in EXPORT_FILES and _is_plain(path, want_dir=False):
            continue
        if name == "assets" and _is_plain(path, want_dir=True) and not os.listdir(path):
            continue
        if name == "variables" and _is_plain(path, want_dir=True) and all(
                _VARIABLES_FILE.fullmatch(v) and _is_plain(os.path.join(path, v), False)
                for v in os.listdir(path)):
            continue
        foreign.append(_label(path))
    return foreign


def read_info(folder: str) -> dict | None:
    """``export_info.json`` as a dict, or None when missing or unreadable."""
    try:
        info = json_files.load(os.path.join(folder, EXPORT_INFO))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def has_marker(folder: str) -> bool:
    """The folder's ``export_info.json`` says it is an export of this project."""
    info = read_info(folder)
    if info is None:
        return False
    if str(info.get(FORMAT_KEY, "")).startswith(FORMAT.split("/")[0] + "/"):
        return True
    legacy = "signature" in info and "num_bits" in info
    return legacy and os.path.isfile(os.path.join(folder, "saved_model.pb"))


def _is_ancestor_or_same(folder: str, path: str) -> bool:
    """``path`` is ``folder`` or lies inside it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _refusal(export_dir: str) -> str | None:
    """Why ``export_dir`` (absolute) must not be replaced, or None when it may be."""
    if "\\" in export_dir or re.search(r"\[[^/]*\]", export_dir):
        # tf.saved_model.load reads the variables through a file *pattern*: such an
        # export would be written, then never load again.
        return ("holds '[...]' or a backslash, which TensorFlow reads as a file pattern: "
                "the SavedModel could never be loaded back")
    if os.path.islink(export_dir):
        return "is a symbolic link"
    if not os.path.lexists(export_dir):
        return None
    if not os.path.isdir(export_dir):
        return "is a file, not a folder"
    real = os.path.realpath(export_dir)
    if os.path.dirname(real) == real:
        return "is the filesystem root"
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:
        cwd = None
    if cwd is not None and _is_ancestor_or_same(real, cwd):
        return ("is the current directory" if real == cwd
                else "contains the current directory")
    foreign = _foreign_entries(export_dir)
    if foreign:
        return f"not an export of this project: holds {_summary(foreign)}"
    if os.listdir(export_dir) and not has_marker(export_dir):
        return (f"not an export of this project: no {EXPORT_INFO} with "
                f"\"{FORMAT_KEY}\": \"{FORMAT}\"")
    return None


def check_export_dir(export_dir: str) -> str:
    """The absolute ``export_dir`` if an export may write it.

    Raises:
        ExportDirError: it exists and is not an empty folder or a previous export.
    """
    path = os.path.abspath(export_dir)
    why = _refusal(path)
    if why:
        raise ExportDirError(f"{path}: {why}; choose an empty or new folder "
                             "(an export replaces its folder)")
    return path


def export_owns(relative: str, is_dir: bool) -> bool:
    """The entries an export writes (:data:`EXPORT_FILES`, ``variables/variables.*``,
    ``assets/``)."""
    parts = relative.split(os.sep)
    if len(parts) == 1:
        return (not is_dir and parts[0] in EXPORT_FILES) or \
            (is_dir and parts[0] in ("variables", "assets"))
    return (len(parts) == 2 and parts[0] == "variables" and not is_dir
            and bool(_VARIABLES_FILE.fullmatch(parts[1])))


# --- its siblings and lock ---------------------------------------------------------------

def _siblings(export_dir: str, kind: str) -> list[str]:
    """An export's own siblings (older exports' temporary names included)."""
    return siblings(export_dir, kind, legacy_tmp=True)


def remove_stale(export_dir: str) -> None:
    """With the lock held: remove temporaries and aside copies killed exports left (what an
    export writes; anything else is kept aside, common.io.folder_swap)."""
    folder_swap.remove_stale(export_dir, export_owns, legacy_tmp=True)


def export_lock(export_dir: str):
    """:func:`folder_lock` for an export (ExportBusyError when another export holds it)."""
    return folder_lock(export_dir, lambda lock_path: ExportBusyError(
        f"{export_dir}: another export to this folder is running (it holds {lock_path}); "
        "wait for it to finish"))


def _is_complete_export(folder: str) -> bool:
    """A folder holding a whole export of this project (marker, SavedModel, variables)."""
    return (has_marker(folder) and not _foreign_entries(folder)
            and os.path.isfile(os.path.join(folder, "saved_model.pb"))
            and os.path.isfile(os.path.join(folder, "variables", "variables.index")))


def recover_locked(export_dir: str) -> bool:
    """With the lock held: if ``export_dir`` is missing, rename the newest complete aside
    export back. Returns whether one was restored."""
    return put_back_newest_aside(export_dir, _is_complete_export, EXPORT_INFO)


def recover_export(export_dir: str) -> bool:
    """Put back the previous export a killed export left aside (``.NAME.old-*``).

    Only acts when ``export_dir`` is missing. Returns whether an export was restored.

    Raises:
        ExportBusyError: an export to this folder is running right now.
    """
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    if os.path.lexists(export_dir) or not os.path.isdir(parent):
        return False
    if not any(_is_complete_export(p) for p in _siblings(export_dir, "old")):
        return False
    with export_lock(export_dir):
        return recover_locked(export_dir)


def put_in_place(tmp: str, export_dir: str) -> None:
    """Make the complete ``tmp`` export ``export_dir`` (see :func:`swap_in_place`)."""
    swap_in_place(tmp, export_dir, "export", export_owns)
