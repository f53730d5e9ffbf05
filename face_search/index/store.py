"""An index folder on disk: written whole or not at all, never losing the previous one.

Layout (format ``face-search-index/1``): ``index.json`` (the marker, bit count, kind,
next gallery id, the model that made the codes, how its photos were cut into faces when it
holds photos (optional ``faces``), the size and SHA-256 of every other file, and a checksum
of itself: ``face_search.index.manifest``), ``codes.npy``, ``ids.npy``,
``labels.npy``, ``identity_codes.npy``, ``identity_names.json``, ``sources.npy`` (UTF-8
bytes) and ``source_ends.npy``.

The rules are the exports' (``common.io.folder_swap``): the new index is written into
``.NAME.tmp-<hex>`` beside the target, fsynced, and swapped in with one
``renameat2(RENAME_EXCHANGE)``; where the filesystem cannot exchange, the old index is
renamed aside (``.NAME.old-<hex>``) first and put back by the next save or load if a
kill left the folder missing. A lock (``.NAME.lock``) refuses a second writer. Only a
new folder, an empty one or an index (the marker and only the files above) may be
replaced. Loading checks the manifest against its checksum and every file against its
recorded size and hash, so a damaged index is refused with the file named instead of
answering wrong results. A load while a save swaps the folder reads the old index or the
new one, never a mix and never a false "damaged" (``face_search.index.folder_snapshot``).

Crash points (``common.io.faults``): ``index:written`` (temporary folder complete, nothing
swapped), ``index:aside`` (fallback only: the old index aside, the new one not yet in
place), ``index:swapped`` (new index in place, the old one not yet removed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
import time
from typing import Any, BinaryIO, Iterator

import numpy as np

from common.io import interrupts, json_files
from common.io.atomic import make_temp_dir
# The exports' rename primitives: the same atomic exchange and no-replace rename.
from common.io.folder_swap import (discard_or_keep, fsync_tree, put_back_newest_aside, siblings,
                                   swap_in_place)
from common.io.locks import folder_lock
from common.io.faults import crash_point
from face_search.index import manifest as index_manifest
from face_search.errors import IndexBusyError, IndexFolderError
from face_search.index.folder_snapshot import FolderReplaced, FolderSnapshot
from face_search.index.manifest import FORMAT


INDEX_JSON = "index.json"
ARRAY_FILES = ("codes", "ids", "labels", "identity_codes", "sources", "source_ends")
NAMES_FILE = "identity_names.json"
INDEX_FILES = frozenset({INDEX_JSON, NAMES_FILE, *(f"{name}.npy" for name in ARRAY_FILES)})
# Index folders whose lock this thread holds. Per thread: a second thread of the process
# must not walk past the lock (two writers would each save over the other's change).
_held = threading.local()
# Loads of one index while saves keep replacing it: each retry follows a swap that came
# between two files of the previous try (a save takes far longer than a load's opens).
LOAD_ATTEMPTS = 50
_BUSY_WAIT = 0.02  # seconds between tries while a fallback swap has the folder aside


# ------------------------------------------------------------ which folders we may replace
def read_manifest(folder: str) -> dict[str, Any] | None:
    """``index.json`` if it carries our marker (unchecked: whether a save may replace it),
    else None."""
    try:
        with open(os.path.join(folder, INDEX_JSON), "rb") as f:
            return index_manifest.marked(f.read())
    except OSError:
        return None


def _foreign(folder: str) -> list[str]:
    """Entries of ``folder`` that a save does not write (or that are not plain files)."""
    return sorted(name + ("/" if os.path.isdir(os.path.join(folder, name)) else "")
                  for name in os.listdir(folder)
                  if name not in INDEX_FILES
                  or not stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode))


def _refusal(path: str) -> str | None:
    """Why the absolute ``path`` must not be replaced by an index, or None."""
    if os.path.islink(path):
        return "is a symbolic link"
    if not os.path.lexists(path):
        return None
    if not os.path.isdir(path):
        return "is a file, not a folder"
    real = os.path.realpath(path)
    if os.path.dirname(real) == real:
        return "is the filesystem root"
    with contextlib.suppress(OSError):
        cwd = os.path.realpath(os.getcwd())
        if cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
            return "is or contains the current directory"
    foreign = _foreign(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        return f"not an index folder: holds {shown}"
    if os.listdir(path) and read_manifest(path) is None:
        if os.path.exists(os.path.join(path, INDEX_JSON)):  # never guess it is ours
            return (f"its {INDEX_JSON} is damaged or of another format (delete the folder "
                    "yourself if it is a damaged index)")
        return f"not an index folder: no {INDEX_JSON} with \"format\": \"{FORMAT}\""
    return None


def check_index_dir(folder: str) -> str:
    """The absolute ``folder`` if an index may be written there (IndexFolderError if not)."""
    path = os.path.abspath(folder)
    why = _refusal(path)
    if why:
        raise IndexFolderError(f"{path}: {why}; choose a new or empty folder, or an index "
                               "(it is replaced)")
    return path


# ------------------------------------------------------------------------ the lock
@contextlib.contextmanager
def locked(folder: str) -> Iterator[str]:
    """Hold ``.NAME.lock`` beside ``folder`` (re-entrant in this thread); yields the
    absolute path. Hold it around load-change-save so no other writer interleaves.

    Raises:
        IndexBusyError: another process, or another thread of this one, holds it.
    """
    path = os.path.abspath(folder)
    held: set[str] = _held.__dict__.setdefault("folders", set())
    if path in held:
        yield path
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with folder_lock(path, lambda lock_path: IndexBusyError(
            f"{path}: another writer is changing this index (it holds {lock_path}); wait for "
            "it to finish")):
        held.add(path)
        try:
            yield path
        finally:
            held.discard(path)


def _recover(path: str) -> None:
    """With the lock held: put back the newest complete aside copy if ``path`` is missing."""
    if os.path.isdir(os.path.dirname(path)):
        put_back_newest_aside(path, lambda p: bool(read_manifest(p)) and not _foreign(p),
                              INDEX_JSON)


# ------------------------------------------------------------------------ writing
def _sha256(f: BinaryIO) -> str:
    """The SHA-256 of the rest of the open file ``f``."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _write_files(folder: str, arrays: dict[str, Any], header: dict[str, Any]) -> None:
    """Every file of an index into the empty ``folder``, flushed; ``header`` holds the
    manifest's fields other than ``format``, ``saved_at`` and ``files``."""
    files = {}
    for name in ARRAY_FILES:
        file = os.path.join(folder, f"{name}.npy")
        np.save(file, np.ascontiguousarray(arrays[name]), allow_pickle=False)
    with open(os.path.join(folder, NAMES_FILE), "w", encoding="utf-8") as f:
        json.dump(arrays["identity_names"], f, ensure_ascii=False)
    for name in sorted(INDEX_FILES - {INDEX_JSON}):
        with open(os.path.join(folder, name), "rb") as f:
            files[name] = {"bytes": os.fstat(f.fileno()).st_size, "sha256": _sha256(f)}
    manifest = {"format": FORMAT, **header,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
    with open(os.path.join(folder, INDEX_JSON), "wb") as f:
        f.write(index_manifest.encode(manifest))
    fsync_tree(folder)


def owns(relative: str, is_dir: bool) -> bool:
    """The files an index folder holds (:data:`INDEX_FILES`): all a save may delete."""
    return not is_dir and relative in INDEX_FILES


def _put_in_place(tmp: str, path: str) -> None:
    """Make the complete ``tmp`` the index at ``path``; never leave it missing for good."""
    swap_in_place(tmp, path, "index", owns)


def save_folder(folder: str, arrays: dict[str, Any], header: dict[str, Any]) -> str:
    """Write an index's ``arrays`` (:data:`ARRAY_FILES` and ``identity_names``) and its
    manifest ``header`` (``num_bits``, ``kind``, ``count``, ``next_id``, ``model``,
    ``identities``, optionally ``faces``) to ``folder`` atomically (module docstring).
    Returns the absolute path.

    Raises:
        IndexFolderError: ``folder`` is something an index may not replace.
        IndexBusyError: another process or thread is writing it.
    """
    path = check_index_dir(folder)
    with locked(path), interrupts.deferred():
        _recover(path)
        check_index_dir(path)  # again, now that we hold the lock
        for stale in siblings(path, "tmp") + siblings(path, "old"):
            discard_or_keep(stale, path, owns)
        tmp = make_temp_dir(f".{os.path.basename(path)}.tmp-", os.path.dirname(path))
        try:
            _write_files(tmp, arrays, header)
            crash_point("index:written")
            interrupts.check()
            _put_in_place(tmp, path)
        except BaseException:
            discard_or_keep(tmp, path, owns)
            raise
    return path


# ------------------------------------------------------------------------ reading
def _read_file(snapshot: FolderSnapshot, name: str, record: Any) -> Any:
    """One data file of the snapshot, checked against its manifest ``record``."""
    file = os.path.join(snapshot.path, name)
    try:
        f = snapshot.open(name)
    except FileNotFoundError:
        raise IndexFolderError(f"{file}: missing; the index is incomplete") from None
    except IsADirectoryError:
        raise IndexFolderError(f"{file}: not a file; the index is damaged") from None
    with f:
        if not isinstance(record, dict) or os.fstat(f.fileno()).st_size != record.get("bytes") \
                or _sha256(f) != record.get("sha256"):
            raise IndexFolderError(f"{file}: damaged (size or SHA-256 differs from "
                                   f"{INDEX_JSON}); rebuild the index")
        f.seek(0)
        if name == NAMES_FILE:
            try:
                return json_files.loads(f.read().decode("utf-8"))
            except ValueError as exc:  # a matching hash of a file nested too deep, say
                raise IndexFolderError(f"{file}: damaged ({exc}); rebuild the index") from None
        return np.load(f, allow_pickle=False)


def _read_checked(snapshot: FolderSnapshot, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every data file, checked against the manifest's sizes and hashes."""
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != INDEX_FILES - {INDEX_JSON}:
        raise IndexFolderError(f"{os.path.join(snapshot.path, INDEX_JSON)}: damaged (file list)")
    arrays = {name.rsplit(".", 1)[0]: _read_file(snapshot, name, record)
              for name, record in sorted(files.items())}
    if not isinstance(arrays["identity_names"], list) or not all(
            isinstance(n, str) for n in arrays["identity_names"]):
        raise IndexFolderError(f"{os.path.join(snapshot.path, NAMES_FILE)}: not a list of names")
    return arrays


def _load_once(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and arrays in the folder at ``path`` now (FolderReplaced: read again)."""
    if not os.path.lexists(path) and os.path.isdir(os.path.dirname(path)) and \
            siblings(path, "old"):
        with locked(path):
            _recover(path)
    try:
        snapshot = FolderSnapshot(path)
    except (FileNotFoundError, NotADirectoryError):
        if os.path.isdir(os.path.dirname(path)) and siblings(path, "old"):
            # a save moved it aside after the check above (no folder exchange here): read
            # again, which waits for that save or puts the aside copy back
            raise FolderReplaced from None
        raise IndexFolderError(f"{path}: no such index folder") from None
    with snapshot:
        try:
            with snapshot.open(INDEX_JSON) as f:
                raw = f.read()
        except OSError:
            raw = b""
        manifest = index_manifest.checked(raw, os.path.join(path, INDEX_JSON))
        if manifest is None and raw.strip() and not _is_json(raw):
            raise IndexFolderError(f"{os.path.join(path, INDEX_JSON)}: damaged (not JSON); "
                                   "rebuild the index")
        if manifest is None:
            raise IndexFolderError(f"{path}: not an index (no {INDEX_JSON} with \"format\": "
                                   f"\"{FORMAT}\")")
        arrays = _read_checked(snapshot, manifest)
    return manifest, arrays


def _is_json(raw: bytes) -> bool:
    try:
        json_files.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        return False
    return True


def load_folder(folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(manifest, arrays)`` of the index saved in ``folder``, both from one save, every
    file checked against the manifest (the arrays' meaning is the gallery's to check).

    A save that swaps the folder meanwhile makes this read the new one from the start
    (up to ``LOAD_ATTEMPTS`` times); where the filesystem cannot exchange folders and a
    save has the old one aside for an instant, it waits for the new one.

    Raises:
        IndexFolderError: missing, not an index, or damaged (the file is named).
        IndexBusyError: the folder stayed missing while another process was saving it.
    """
    path = os.path.abspath(folder)
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        try:
            return _load_once(path)
        except FolderReplaced:
            continue
        except IndexBusyError:
            if attempt == LOAD_ATTEMPTS:
                raise
            time.sleep(_BUSY_WAIT)
    raise IndexFolderError(f"{path}: replaced by {LOAD_ATTEMPTS} saves while being read "
                           "(another process saves it continuously); try again")

