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
* Exchange. The new export is written into ``.NAME.tmp-<12 hex>`` beside ``export_dir``
  and swapped in with Linux ``renameat2(RENAME_EXCHANGE)``, so ``export_dir`` is at every
  instant the complete old or the complete new export. Where the OS or filesystem lacks
  it, the old export is renamed aside to ``.NAME.old-<12 hex>`` first; if a kill leaves
  ``export_dir`` missing, the next export (or :func:`common.encoder.load_encoder`) renames
  the newest complete aside copy back before anything else.
* Lock. An export holds ``fcntl.flock`` on ``.NAME.lock`` beside ``export_dir`` (removed
  when done); a second export to the same folder is refused (:class:`ExportBusyError`).
* Cleanup. Under that lock, stale ``.NAME.tmp-*`` / ``.NAME.old-*`` folders of this very
  ``export_dir`` (exact name pattern, real folders only) that a killed export left are
  removed. Nothing else is ever removed.
* Only what it wrote. Replacing or cleaning up never removes a folder wholesale: it
  deletes, one by one, the entries the writer recognises as its own (for an export: the
  files an export writes, :func:`export_owns`) and then the folders that became empty. A
  file someone else put there (say, written into ``export_dir`` while the export ran)
  therefore survives whatever the timing: found before the old folder is dropped, the
  swap is undone and the command stops with :class:`common.errors.FolderChangedError`
  (``export_dir`` as it was, nothing replaced); appearing later still, it is kept in a
  visible ``NAME.kept-<hex>`` folder beside ``export_dir`` and a warning names it.
* Permissions. The export folder is made with ``mkdir(0o777)``, so the process umask
  applies exactly as for ``mkdir`` (umask 022 -> 0755), not ``mkdtemp``'s 0700.
* Durability. Files and folders are fsync'ed before the swap, the parent folder after it.

Crash points (:func:`common.faults.crash_point`): ``export:aside`` (fallback only: the old
export renamed aside, the new one not yet in place), ``export:swapped`` (new export in
place, the old one not yet removed).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import secrets
import stat
from typing import Callable, Iterator

from absl import logging

from common.atomic_files import fsync_path as _fsync_path
from common.errors import FolderChangedError
from common.faults import crash_point

EXPORT_INFO = "export_info.json"
KERAS_FILE = "model.keras"
FORMAT_KEY = "format"
FORMAT = "face-hashing-export/1"
EXPORT_FILES = frozenset({"saved_model.pb", "fingerprint.pb", KERAS_FILE, EXPORT_INFO})
_VARIABLES_FILE = re.compile(r"variables\.(index|data-\d+-of-\d+)")
_TOKEN_HEX = 12


class ExportDirError(ValueError):
    """``--export_dir`` names a folder an export must not replace (or cannot use now)."""


class ExportBusyError(ExportDirError):
    """Another export to the same folder holds its lock."""


# --- which folders an export may replace ------------------------------------------------

def _label(path: str) -> str:
    """An entry's name as a listing shows it (folders end with ``/``)."""
    name = os.path.basename(path)
    return name + "/" if os.path.isdir(path) and not os.path.islink(path) else name


def _is_plain(path: str, want_dir: bool) -> bool:
    """``path`` is a real file (or folder), not a symbolic link."""
    mode = os.lstat(path).st_mode
    return stat.S_ISDIR(mode) if want_dir else stat.S_ISREG(mode)


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
        with open(os.path.join(folder, EXPORT_INFO), encoding="utf-8") as f:
            info = json.load(f)
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


def _summary(labels: list[str], limit: int = 6) -> str:
    """``a, b/, c, ...`` (at most ``limit`` names)."""
    shown = ", ".join(labels[:limit])
    return shown + (f", ... ({len(labels)} entries)" if len(labels) > limit else "")


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


# --- what a writer owns -------------------------------------------------------------------

# owns(relative path, is a folder) -> whether the writer itself makes such an entry.
Owns = Callable[[str, bool], bool]


def export_owns(relative: str, is_dir: bool) -> bool:
    """The entries an export writes (:data:`EXPORT_FILES`, ``variables/variables.*``,
    ``assets/``)."""
    parts = relative.split(os.sep)
    if len(parts) == 1:
        return (not is_dir and parts[0] in EXPORT_FILES) or \
            (is_dir and parts[0] in ("variables", "assets"))
    return (len(parts) == 2 and parts[0] == "variables" and not is_dir
            and bool(_VARIABLES_FILE.fullmatch(parts[1])))


def foreign_paths(folder: str, owns: Owns) -> list[str]:
    """Entries below ``folder`` (relative, sorted) that ``owns`` does not accept; a
    symbolic link is always foreign (never followed)."""
    foreign = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            relative = os.path.relpath(path, folder)
            is_dir = _is_plain(path, want_dir=True)
            if os.path.islink(path) or not (is_dir or _is_plain(path, want_dir=False)) \
                    or not owns(relative, is_dir):
                foreign.append(relative + ("/" if is_dir else ""))
        dirnames[:] = [d for d in dirnames
                       if not os.path.islink(os.path.join(dirpath, d))
                       and owns(os.path.relpath(os.path.join(dirpath, d), folder), True)]
    return sorted(foreign)


def discard_owned(folder: str, owns: Owns) -> list[str]:
    """Delete below ``folder`` only the files ``owns`` accepts, then every folder left
    empty (``folder`` itself included), bottom up. Returns what is left (relative).

    Never a wholesale removal: a file that appears at any moment and is not the writer's
    own is still there afterwards.
    """
    if not os.path.isdir(folder) or os.path.islink(folder):
        return []
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path) and _is_plain(path, want_dir=False) and \
                    owns(os.path.relpath(path, folder), False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # only if empty
    with contextlib.suppress(OSError):
        os.rmdir(folder)
    if not os.path.lexists(folder):
        return []
    return foreign_paths(folder, owns) or sorted(os.listdir(folder))


def keep_aside(folder: str, target: str, left: list[str]) -> str:
    """Rename ``folder`` (holding entries the writer did not make) to a visible
    ``NAME.kept-<hex>`` beside ``target`` and warn; returns the new path."""
    kept = os.path.join(os.path.dirname(target), f"{os.path.basename(target)}.kept-"
                                                  f"{secrets.token_hex(_TOKEN_HEX // 2)}")
    os.rename(folder, kept)
    logging.warning("%s: kept %s, which this program did not write, in %s", target,
                    _summary(left), kept)
    return kept


def discard_or_keep(folder: str, target: str, owns: Owns) -> None:
    """Delete what the writer owns in ``folder``; anything else is kept (:func:`keep_aside`)."""
    left = discard_owned(folder, owns)
    if left and os.path.lexists(folder):
        keep_aside(folder, target, left)


# --- renames ----------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def _load_renameat2():
    """libc's ``renameat2``, or None (not Linux, old glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _rename_with_flags(src: str, dst: str, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the OS or filesystem does not support it."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), src, None, dst)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two existing paths; False when the OS cannot (caller falls back)."""
    return _rename_with_flags(a, b, _RENAME_EXCHANGE)


def rename_noreplace(src: str, dst: str) -> None:
    """Rename ``src`` to a ``dst`` that must not exist (never replaces a folder)."""
    if _rename_with_flags(src, dst, _RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "appeared during the export", dst)
    os.rename(src, dst)


def fsync_tree(folder: str) -> None:
    """Flush every file and folder below ``folder`` so a power cut after the swap loses nothing."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            _fsync_path(os.path.join(dirpath, name))
        _fsync_path(dirpath)


# --- siblings: temporaries, aside copies, lock --------------------------------------------

def sibling(export_dir: str, kind: str) -> str:
    """A fresh hidden sibling path ``.NAME.<kind>-<hex>``."""
    name = os.path.basename(export_dir)
    token = secrets.token_hex(_TOKEN_HEX // 2)
    return os.path.join(os.path.dirname(export_dir), f".{name}.{kind}-{token}")


def _sibling_pattern(target: str, kind: str, legacy_tmp: bool) -> re.Pattern:
    """Names of ``target``'s own ``kind`` siblings (``legacy_tmp``: ``tmp`` also matches
    the ``tempfile.mkdtemp`` names of the exports before this module took its own)."""
    name = re.escape(os.path.basename(target))
    legacy = r"|[a-z0-9_]{8}" if legacy_tmp and kind == "tmp" else ""
    return re.compile(rf"\.{name}\.{kind}-(?:[0-9a-f]{{{_TOKEN_HEX}}}{legacy})")


def siblings(target: str, kind: str, legacy_tmp: bool = False) -> list[str]:
    """Existing real folders (no links) named like ``target``'s ``kind`` siblings
    (``.NAME.<kind>-<12 hex>``, as :func:`sibling` and ``make_temp_dir`` name them)."""
    parent = os.path.dirname(target)
    pattern = _sibling_pattern(target, kind, legacy_tmp)
    found = []
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if pattern.fullmatch(name) and _is_plain(path, want_dir=True):
            found.append(path)
    return found


def _siblings(export_dir: str, kind: str) -> list[str]:
    """An export's own siblings (older exports' temporary names included)."""
    return siblings(export_dir, kind, legacy_tmp=True)


@contextlib.contextmanager
def folder_lock(target: str, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive lock on ``.NAME.lock`` beside ``target``; removed on release.

    Raises:
        the exception ``busy(lock_path)`` builds: another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    lock_path = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise busy(lock_path) from None
        # The holder before us may have unlinked the file: lock the one that is named.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


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


def put_back_newest_aside(target: str, complete: Callable[[str], bool], marker: str) -> bool:
    """With the lock held: if ``target`` is missing, rename back the newest ``.NAME.old-*``
    copy that ``complete`` accepts (newest by its ``marker`` file's time). Returns whether
    one was restored."""
    if os.path.lexists(target):
        return False
    candidates = [p for p in siblings(target, "old") if complete(p)]
    if not candidates:
        return False
    newest = max(candidates, key=lambda p: os.stat(os.path.join(p, marker)).st_mtime_ns)
    rename_noreplace(newest, target)
    _fsync_path(os.path.dirname(target))
    return True


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


def remove_stale(export_dir: str, owns: Owns = export_owns) -> None:
    """With the lock held: remove temporaries and aside copies killed writers left (only
    what ``owns`` accepts; anything else in them is kept, :func:`keep_aside`)."""
    for path in _siblings(export_dir, "tmp") + _siblings(export_dir, "old"):
        discard_or_keep(path, export_dir, owns)


def _drop_replaced(old: str, target: str, owns: Owns, swap_back: Callable[[], None],
                   new: str) -> None:
    """After a swap: delete the replaced folder ``old`` if it holds only what the writer
    makes; if something else appeared in it while the new folder was written, undo the
    swap (``swap_back`` puts ``old`` back at ``target`` and the new folder at ``new``),
    drop the new folder and raise FolderChangedError."""
    foreign = foreign_paths(old, owns)
    if foreign:
        swap_back()
        _fsync_path(os.path.dirname(target))
        discard_or_keep(new, target, owns)
        raise FolderChangedError(
            f"{target}: changed while it was being replaced (it now holds "
            f"{_summary(foreign)}); it was left as it is and nothing was replaced. Move those "
            "files away, or choose another folder, and run the command again")
    discard_or_keep(old, target, owns)


def swap_in_place(tmp: str, target: str, crash_prefix: str, owns: Owns) -> None:
    """Make the complete folder ``tmp`` the folder ``target``, never leaving it missing
    (exchange) or only briefly so and recoverably (fallback: the old one waits aside
    as ``sibling(target, "old")``); then drop what the old one held of the writer's own
    (``owns``), undoing the swap if it holds anything else (:func:`_drop_replaced`).
    ``crash_prefix`` names the fault-injection points (``PREFIX:swapped``, ``PREFIX:aside``).

    Raises:
        FolderChangedError: ``target`` gained entries the writer does not make while
            ``tmp`` was written; ``target`` is as it was.
    """
    parent = os.path.dirname(target)
    if not os.path.lexists(target):
        rename_noreplace(tmp, target)
        _fsync_path(parent)
        crash_point(f"{crash_prefix}:swapped")
        return
    if _exchange(tmp, target):
        _fsync_path(parent)
        crash_point(f"{crash_prefix}:swapped")
        # ``tmp`` now holds the previous folder
        _drop_replaced(tmp, target, owns, lambda: _exchange(tmp, target), tmp)
        return
    old = sibling(target, "old")
    os.rename(target, old)
    crash_point(f"{crash_prefix}:aside")
    try:
        os.rename(tmp, target)
    except BaseException:
        if not os.path.lexists(target):
            os.rename(old, target)
        raise
    _fsync_path(parent)
    crash_point(f"{crash_prefix}:swapped")

    def swap_back() -> None:
        os.rename(target, tmp)
        os.rename(old, target)

    _drop_replaced(old, target, owns, swap_back, tmp)


def put_in_place(tmp: str, export_dir: str) -> None:
    """Make the complete ``tmp`` export ``export_dir`` (see :func:`swap_in_place`)."""
    swap_in_place(tmp, export_dir, "export", export_owns)
