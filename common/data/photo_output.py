"""Where a converted photo data set may be written, and writing it whole or not at all.

Why: the converter's output folder is replaced as a whole, so pointed at the wrong place
(the photos themselves, ``.``, a run folder) it must refuse before any work; and a crash
or Ctrl-C must never leave a half-written data set nor lose the previous one.

* May be written: a new path, an empty folder, or a previous output of the converter
  (``meta.json`` holding ``"format": "face-hashing-photo-dataset/1"`` and nothing but
  ``meta.json``, ``train/`` and ``test/`` holding ``.pkl`` files; no symbolic links).
  Refused with :class:`DataFormatError` (exit 2 on the command line): a file, a symbolic
  link, the filesystem root, the current folder or one of its parents, the source
  folder, a folder inside it or one containing it, anything else.
* Written into ``.NAME.tmp-<12 hex>`` beside the target, fsynced, then swapped in by
  :func:`common.io.folder_swap.swap_in_place` (one atomic exchange on Linux): the target is
  always the complete old or the complete new data set. The temporary folder is removed
  on any error or interrupt; leftovers of a killed run (its own ``.NAME.tmp-*`` /
  ``.NAME.old-*`` only) are removed by the next run, under a lock (``.NAME.lock``) that
  refuses a second conversion into the same folder. Only what the converter writes is ever
  deleted (:func:`owns`): a file someone puts into the output folder while a conversion
  runs stops it with the folder left as it is (common.io.folder_swap, "Only what it wrote").
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Callable

from common.errors import FolderChangedError
from common.io import folder_swap, json_files
from common.io.locks import folder_lock
from common.data.errors import DataFormatError

FORMAT = "face-hashing-photo-dataset/1"
META_FILE = "meta.json"
SPLITS = ("train", "test")


def _plain(path: str, folder: bool) -> bool:
    mode = os.lstat(path).st_mode
    return stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)


def is_previous_output(folder: str) -> bool:
    """``folder`` holds a data set this converter wrote, and nothing else."""
    try:
        meta = json_files.load(os.path.join(folder, META_FILE))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return False
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name == META_FILE and _plain(path, folder=False):
            continue
        if name in SPLITS and _plain(path, folder=True) and all(
                part.endswith(".pkl") and _plain(os.path.join(path, part), folder=False)
                for part in os.listdir(path)):
            continue
        return False
    return True


def owns(relative: str, is_dir: bool) -> bool:
    """The entries the converter writes: ``meta.json``, ``train/``, ``test/`` and their
    ``.pkl`` parts (what replacing a previous output may delete)."""
    parts = relative.split(os.sep)
    if len(parts) == 1:
        return (not is_dir and parts[0] == META_FILE) or (is_dir and parts[0] in SPLITS)
    return (len(parts) == 2 and parts[0] in SPLITS and not is_dir
            and parts[1].endswith(".pkl"))


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies below it (both real, absolute)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _refusal(out: str, src: str | None) -> str | None:
    """Why ``out`` (absolute) must not be written, or None."""
    if os.path.islink(out):
        return "is a symbolic link"
    real = os.path.realpath(out)
    if src is not None:
        real_src = os.path.realpath(src)
        if _inside(real, real_src):
            return "lies inside the source folder --src (it would be read as photos next time)"
        if _inside(real_src, real):
            return "contains the source folder --src"
    if not os.path.lexists(out):
        return None
    if not os.path.isdir(out):
        return "is a file, not a folder"
    if os.path.dirname(real) == real:
        return "is the filesystem root"
    with contextlib.suppress(OSError):
        if _inside(os.path.realpath(os.getcwd()), real):
            return "is the current folder or contains it"
    if os.listdir(out) and not is_previous_output(out):
        return (f"is not empty and is not a data set this converter wrote (no {META_FILE} with "
                f"\"format\": \"{FORMAT}\", or other files beside train/, test/, {META_FILE}); "
                "choose a new or empty folder")
    return None


def check_output_folder(out: str | os.PathLike, src: str | os.PathLike | None = None) -> str:
    """The absolute ``out`` if the converter may write it (see the module docstring).

    Raises:
        DataFormatError: it may not.
    """
    path = os.path.abspath(os.fspath(out))
    why = _refusal(path, None if src is None else os.path.abspath(os.fspath(src)))
    if why:
        raise DataFormatError(path, why)
    return path


def _locked(out: str):
    return folder_lock(out, lambda lock: DataFormatError(
        out, f"another process is writing this folder (it holds {os.path.basename(lock)} "
             "beside it)"))


def write_folder_atomically(out: str | os.PathLike, write: Callable[[str], None],
                            src: str | os.PathLike | None = None) -> str:
    """Call ``write(tmp)`` to fill a fresh temporary folder, then swap it in as ``out``.

    ``write`` must leave in ``tmp`` only what :func:`is_previous_output` accepts, so that
    the next conversion may replace it. Returns the absolute ``out``.

    Raises:
        DataFormatError: ``out`` may not be written, or another conversion is writing it.
    """
    out = check_output_folder(out, src)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with _locked(out):
        folder_swap.remove_stale(out, owns)
        tmp = folder_swap.sibling(out, "tmp")
        os.mkdir(tmp, 0o777)  # mkdir's mode less the umask, as any output
        try:
            write(tmp)
            folder_swap.fsync_tree(tmp)
            check_output_folder(out, src)  # unchanged while we worked
            folder_swap.swap_in_place(tmp, out, "export", owns)
        except FolderChangedError as exc:
            raise DataFormatError(out, str(exc).split(": ", 1)[-1]) from None
        finally:
            folder_swap.discard_or_keep(tmp, out, owns)
    return out
