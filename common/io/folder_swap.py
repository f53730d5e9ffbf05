"""Replacing a folder as a whole so that nothing is ever lost, and only what it wrote goes.

Why one module: an export, a gallery index, a converted photo set and an augmented split are
each written whole into a hidden sibling and then swapped in for the target folder; the
rules that make that safe are the same for all of them:

* Exchange. The new folder ``.NAME.tmp-<12 hex>`` is swapped in with Linux
  ``renameat2(RENAME_EXCHANGE)``, so the target is at every instant the complete old or the
  complete new folder. Where the OS or filesystem lacks it, the old folder is renamed aside
  to ``.NAME.old-<12 hex>`` first; a writer that finds the target missing puts the newest
  complete aside copy back (:func:`put_back_newest_aside`).
* Only what it wrote. Dropping the replaced folder, or a killed writer's leftovers, deletes
  entry by entry what the writer recognises as its own (its ``owns`` predicate) and then the
  folders left empty: never a wholesale removal. A file someone else put into the target
  while the new folder was written undoes the swap (:class:`common.errors.FolderChangedError`,
  the target as it was); one arriving in the last instant is kept in a visible
  ``NAME.kept-<hex>`` folder, and a warning names it.
* Durability. Files and folders are fsync'ed before the swap, the parent folder after it.

Which folders a writer may replace in the first place is the writer's own rule
(common.export.folder, common.data.photo_output, face_search.index.store).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import stat
from typing import Callable

from absl import logging

from common.errors import FolderChangedError
from common.io.atomic import fsync_path as _fsync_path
from common.io.faults import crash_point

TOKEN_HEX = 12  # the random part of a sibling's name


def is_plain(path: str, want_dir: bool) -> bool:
    """``path`` is a real file (or folder), not a symbolic link."""
    mode = os.lstat(path).st_mode
    return stat.S_ISDIR(mode) if want_dir else stat.S_ISREG(mode)


def summary(labels: list[str], limit: int = 6) -> str:
    """``a, b/, c, ...`` (at most ``limit`` names)."""
    shown = ", ".join(labels[:limit])
    return shown + (f", ... ({len(labels)} entries)" if len(labels) > limit else "")


# --- what a writer owns -------------------------------------------------------------------

# owns(relative path, is a folder) -> whether the writer itself makes such an entry.
Owns = Callable[[str, bool], bool]


def foreign_paths(folder: str, owns: Owns) -> list[str]:
    """Entries below ``folder`` (relative, sorted) that ``owns`` does not accept; a
    symbolic link is always foreign (never followed)."""
    foreign = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            relative = os.path.relpath(path, folder)
            is_dir = is_plain(path, want_dir=True)
            if os.path.islink(path) or not (is_dir or is_plain(path, want_dir=False)) \
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
            if not os.path.islink(path) and is_plain(path, want_dir=False) and \
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
                                                  f"{secrets.token_hex(TOKEN_HEX // 2)}")
    os.rename(folder, kept)
    logging.warning("%s: kept %s, which this program did not write, in %s", target,
                    summary(left), kept)
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


# --- siblings: temporaries and aside copies -----------------------------------------------

def sibling(target: str, kind: str) -> str:
    """A fresh hidden sibling path ``.NAME.<kind>-<hex>``."""
    name = os.path.basename(target)
    token = secrets.token_hex(TOKEN_HEX // 2)
    return os.path.join(os.path.dirname(target), f".{name}.{kind}-{token}")


def _sibling_pattern(target: str, kind: str, legacy_tmp: bool) -> re.Pattern:
    """Names of ``target``'s own ``kind`` siblings (``legacy_tmp``: ``tmp`` also matches
    the ``tempfile.mkdtemp`` names of the exports before this module took its own)."""
    name = re.escape(os.path.basename(target))
    legacy = r"|[a-z0-9_]{8}" if legacy_tmp and kind == "tmp" else ""
    return re.compile(rf"\.{name}\.{kind}-(?:[0-9a-f]{{{TOKEN_HEX}}}{legacy})")


def siblings(target: str, kind: str, legacy_tmp: bool = False) -> list[str]:
    """Existing real folders (no links) named like ``target``'s ``kind`` siblings
    (``.NAME.<kind>-<12 hex>``, as :func:`sibling` and ``make_temp_dir`` name them)."""
    parent = os.path.dirname(target)
    pattern = _sibling_pattern(target, kind, legacy_tmp)
    found = []
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        try:
            if pattern.fullmatch(name) and is_plain(path, want_dir=True):
                found.append(path)
        except FileNotFoundError:  # a saver removed it since the listing (readers hold no lock)
            continue
    return found


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


def remove_stale(target: str, owns: Owns, legacy_tmp: bool = False) -> None:
    """With the target's lock held: remove the temporaries and aside copies killed writers
    left (only what ``owns`` accepts; anything else in them is kept, :func:`keep_aside`)."""
    for path in siblings(target, "tmp", legacy_tmp) + siblings(target, "old", legacy_tmp):
        discard_or_keep(path, target, owns)


def _drop_replaced(old: str, target: str, owns: Owns, swap_back: Callable[[], object],
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
            f"{summary(foreign)}); it was left as it is and nothing was replaced. Move those "
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
