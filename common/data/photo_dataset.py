"""Photos of identities -> a data set in the original 32x32 pickle layout, with its record.

Why its own module: the conversion (which photos are used, how identities are labelled
and split) is what a data set's users must be able to trust and re-create, so it lives
apart from the command line and is tested directly.

Rules:

* Identities and photos are listed by :mod:`common.data.photo_folder`; every photo is
  prepared by a :class:`common.faces.FacePreparer` (same code as search queries).
* A photo that cannot be read (not an image, truncated, empty, too large) or shows no
  face is skipped and recorded with its reason; one with several faces is used (the
  largest face) and counted. Nothing a photo holds stops the conversion.
* An identity with fewer than ``min_per_identity`` usable photos is dropped (recorded);
  the kept identities are labelled 0..K-1 in sorted name order.
* Each kept identity gives ``test_per_identity`` photos to the test split (queries) and
  the rest to train (database), chosen by a generator seeded with (seed, the identity's
  name), so an identity's split does not change when other identities are added. Rows of
  each split are then shuffled (seeded), because training takes batches in file order.
* The same photos, settings and software give byte-identical files (no dates, no paths
  outside the source folder in ``meta.json``).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from common.data.errors import DataFormatError
from common.data.photo_folder import PHOTO_EXTENSIONS, PhotoFolder, list_photo_folder
from common.data.photo_output import FORMAT, META_FILE, write_folder_atomically
from common.data.pickle_folder import write_pickle_folder
from common.io.atomic import write_json_atomic
from common.faces import FaceNotFoundError, FacePreparer, ImageReadError

_ROW_STREAM = 0x524F5753  # "ROWS": the row shuffles' stream, apart from identity splits

Progress = Callable[[int, int], None]  # (photos done, photos to do)


@dataclass
class Conversion:
    """A converted data set in memory: both splits (original layout) and its record."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    meta: dict
    seconds: float = 0.0  # the time it took; kept out of meta so output stays byte-identical


def _name_seed(name: str) -> int:
    """A stable 64-bit number for an identity name (Python's hash() varies per process)."""
    return int.from_bytes(hashlib.sha256(os.fsencode(name)).digest()[:8], "little")


def split_identity(name: str, count: int, test_count: int,
                   seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indices, each in file order, of an identity's ``count`` usable photos."""
    order = np.random.default_rng([seed, _name_seed(name)]).permutation(count)
    test = sorted(int(i) for i in order[:test_count])
    return sorted(set(range(count)) - set(test)), test


def to_rows(faces: list[np.ndarray]) -> np.ndarray:
    """uint8 (32, 32, 3) faces as float32 (n, 3072) rows, channel-first (the original layout)."""
    if not faces:
        return np.zeros((0, 3072), np.float32)
    stacked = np.stack(faces).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(stacked.reshape(len(faces), -1), dtype=np.float32)


class _Tally:
    """What happened to each photo, for the summary and ``meta.json``."""

    def __init__(self) -> None:
        self.skipped: list[dict] = []
        self.several: list[dict] = []

    def skip(self, file: str, kind: str, reason: str) -> None:
        self.skipped.append({"file": file, "kind": kind, "reason": reason})

    def count(self, kind: str) -> int:
        return sum(1 for s in self.skipped if s["kind"] == kind)


def _prepare_identity(folder: PhotoFolder, photos: tuple[str, ...], preparer: FacePreparer,
                      tally: _Tally, step: Callable[[], None]) -> list[tuple[str, np.ndarray]]:
    """The usable (file, face) pairs of one identity's photos, in file order."""
    usable = []
    for rel in photos:
        try:
            prepared = preparer.prepare_file(os.path.join(folder.root, rel))
        except ImageReadError as exc:
            tally.skip(rel, "unreadable", exc.reason)
        except FaceNotFoundError as exc:
            tally.skip(rel, "no_face", exc.reason)
        else:
            if prepared.faces_found > 1:
                tally.several.append({"file": rel, "faces": prepared.faces_found})
            usable.append((rel, prepared.face))
        step()
    return usable


def _shuffled(rows: list[tuple[str, np.ndarray, int]], seed: int,
              stream: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    order = np.random.default_rng([seed, _ROW_STREAM, stream]).permutation(len(rows))
    picked = [rows[i] for i in order]
    x = to_rows([face for _, face, _ in picked])
    y = np.array([label for _, _, label in picked], dtype=np.int64)
    return x, y, [file for file, _, _ in picked]


def convert_photos(src: str | os.PathLike, preparer: FacePreparer, test_per_identity: int = 1,
                   min_per_identity: int = 3, seed: int = 0,
                   progress: Progress | None = None) -> Conversion:
    """Prepare every photo under ``src`` and split them (see the module docstring).

    Args:
        src: ``SRC/<identity>/<any/subfolders>/<photo>``.
        preparer: how photos become faces.
        test_per_identity: photos of each identity that go to the test split (>= 1).
        min_per_identity: identities with fewer usable photos are dropped
            (> test_per_identity, so every kept identity has train photos).
        seed: seeds the splits and the row order.
        progress: called as ``progress(done, total)`` after each photo.

    Raises:
        DataFormatError: ``src`` is not a folder of identity folders with photos, or no
            identity has ``min_per_identity`` usable photos.
        ValueError: inconsistent counts.
    """
    if test_per_identity < 1 or min_per_identity <= test_per_identity:
        raise ValueError(f"need test_per_identity >= 1 and min_per_identity > test_per_identity, "
                         f"got {test_per_identity} and {min_per_identity}")
    start = time.perf_counter()
    folder = list_photo_folder(src)
    total = sum(len(i.photos) for i in folder.identities if len(i.photos) >= min_per_identity)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    tally = _Tally()
    kept: list[tuple[str, int, list[tuple[str, np.ndarray]]]] = []
    dropped = []
    for identity in folder.identities:
        if len(identity.photos) < min_per_identity:
            dropped.append({"name": identity.name, "photos": len(identity.photos), "usable": None,
                            "reason": f"only {len(identity.photos)} photos, fewer than "
                                      f"min_per_identity {min_per_identity} (not read)"})
            continue
        usable = _prepare_identity(folder, identity.photos, preparer, tally, step)
        if len(usable) < min_per_identity:
            dropped.append({"name": identity.name, "photos": len(identity.photos),
                            "usable": len(usable),
                            "reason": f"only {len(usable)} usable photos, fewer than "
                                      f"min_per_identity {min_per_identity}"})
            continue
        kept.append((identity.name, len(identity.photos), usable))
    if not kept:
        raise DataFormatError(os.fspath(src), f"no identity has at least {min_per_identity} usable "
                                              f"photos (min_per_identity); {len(dropped)} dropped")
    train_rows, test_rows, identities = [], [], []
    for label, (name, found, usable) in enumerate(kept):
        train, test = split_identity(name, len(usable), test_per_identity, seed)
        train_rows += [(usable[i][0], usable[i][1], label) for i in train]
        test_rows += [(usable[i][0], usable[i][1], label) for i in test]
        identities.append({"label": label, "name": name, "photos": found,
                           "usable": len(usable), "train": len(train), "test": len(test)})
    train_x, train_y, train_files = _shuffled(train_rows, seed, 0)
    test_x, test_y, test_files = _shuffled(test_rows, seed, 1)
    meta = {
        "format": FORMAT,
        "converter": "common.data.convert",
        "layout": ("train/ and test/: pickles of (x, y), x float32 (n, 3072) = a 32x32 RGB face "
                   "channel-first flattened, values 0..255; y int64 (n,) labels 0..K-1"),
        "settings": {"test_per_identity": test_per_identity, "min_per_identity": min_per_identity,
                     "seed": seed, "photo_extensions": list(PHOTO_EXTENSIONS),
                     **preparer.settings()},
        "num_identities": len(kept),
        "train_images": len(train_y),
        "test_images": len(test_y),
        "photos": {"found": folder.photo_count, "read": total,
                   "not_read": folder.photo_count - total,
                   "used": len(train_y) + len(test_y),
                   "skipped_no_face": tally.count("no_face"),
                   "skipped_unreadable": tally.count("unreadable"),
                   "several_faces": len(tally.several)},
        "identities": identities,
        "dropped_identities": dropped,
        "skipped": tally.skipped,
        "several_faces": tally.several,
        "ignored_files": list(folder.ignored),
        "rows": {"train": train_files, "test": test_files},
    }
    return Conversion(train_x, train_y, test_x, test_y, meta, time.perf_counter() - start)


def write_conversion(out: str | os.PathLike, conversion: Conversion, rows_per_file: int = 1000,
                     src: str | os.PathLike | None = None) -> str:
    """Write ``out/train/``, ``out/test/`` and ``out/meta.json`` whole or not at all
    (:mod:`common.data.photo_output`); returns the absolute ``out``."""
    meta = dict(conversion.meta, rows_per_file=rows_per_file)

    def write(tmp: str) -> None:
        files = {}
        for split, x, y in (("train", conversion.train_x, conversion.train_y),
                            ("test", conversion.test_x, conversion.test_y)):
            paths = write_pickle_folder(os.path.join(tmp, split), x, y, rows_per_file=rows_per_file)
            files[split] = [os.path.basename(p) for p in paths]
        write_json_atomic(os.path.join(tmp, META_FILE), dict(meta, files=files))

    return write_folder_atomically(out, write, src)
