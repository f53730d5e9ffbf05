"""Gallery and query inputs: photo files, photo folders and pickle folders, as face batches.

Layouts, told apart by what a folder holds:

* photo gallery ``DIR/<identity>/<photo>``: a folder with sub-folders; each sub-folder's
  name is the identity of the photos in it;
* photo folder ``DIR/<photo>``: photos directly inside (gallery: identity = the folder's
  name; query: no identity);
* pickle folder: the original "32x32 vector folders" layout (``common.data``): every row
  one face, its label the identity unless a ``meta.json`` beside the folder maps labels to
  names (``{"label_names": ["Alice", ...]}`` or ``{"label_names": {"0": "Alice"}}``);
  the source of a row is ``FILE#ROW``;
* a photo file (its parent folder's name is its identity in a gallery).

Photos go through ``common.faces`` (detection and cropping to 32x32). A photo that cannot
be read or holds no face, or a damaged pickle file, is counted, reported and skipped:
one bad file never stops a build.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from common.io import json_files
from face_search.errors import GalleryInputError

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm",
                              ".pgm", ".tif", ".tiff"})
META_JSON = "meta.json"
BATCH = 256


@dataclass
class Batch:
    """Faces ready for the encoder, with what each one is."""

    faces: np.ndarray                 # uint8 (n, 32, 32, 3)
    identities: list[str | None]
    labels: list[int | None]          # None: photos (the index gives the label)
    sources: list[str]


@dataclass
class Skipped:
    source: str
    reason: str


@dataclass
class InputReport:
    """What was read and what was skipped, and why."""

    faces: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self, shown: int = 5) -> list[str]:
        """Lines for a user: the count, then the first few skipped inputs with reasons."""
        if not self.skipped:
            return []
        lines = [f"skipped {len(self.skipped):,} input(s) that could not be used:"]
        lines += [f"  {s.source}: {s.reason}" for s in self.skipped[:shown]]
        if len(self.skipped) > shown:
            lines.append(f"  ... and {len(self.skipped) - shown:,} more")
        return lines


@dataclass
class _Unit:
    """One thing to read: a photo or a pickle file."""

    kind: str                          # "photo" | "pickle"
    path: str
    identity: str | None = None
    names: dict[int, str] | None = None


def is_photo(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in PHOTO_EXTENSIONS


def _visible(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def label_names(folder: str) -> dict[int, str] | None:
    """The label -> name map of ``meta.json`` beside a pickle folder (None when absent)."""
    path = os.path.join(os.path.dirname(os.path.abspath(folder)), META_JSON)
    if not os.path.isfile(path):
        return None
    try:
        meta = json_files.load(path)
    except (OSError, ValueError) as exc:
        raise GalleryInputError(f"{path}: damaged ({exc}); fix or remove it") from None
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if names is None:
        return None
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        try:
            return {int(k): str(v) for k, v in names.items()}
        except ValueError:
            pass
    raise GalleryInputError(f"{path}: \"label_names\" must be a list of names or an object "
                            "mapping labels to names")


def plan(paths: list[str], gallery: bool) -> tuple[list[_Unit], list[Skipped]]:
    """The photos and pickle files to read, in order, and what is skipped up front.

    Raises:
        GalleryInputError: a path is missing, or a file that is not a photo.
    """
    units: list[_Unit] = []
    skipped: list[Skipped] = []
    for path in paths:
        if not os.path.exists(path):
            raise GalleryInputError(f"{path}: no such file or folder")
        if os.path.isfile(path):
            if not is_photo(path):
                kinds = ", ".join(sorted(PHOTO_EXTENSIONS))
                raise GalleryInputError(f"{path}: not a photo ({kinds}) nor a folder")
            identity = os.path.basename(os.path.dirname(os.path.abspath(path))) if gallery else None
            units.append(_Unit("photo", path, identity))
            continue
        names = _visible(path)
        subdirs = [n for n in names if os.path.isdir(os.path.join(path, n))]
        files = [n for n in names if os.path.isfile(os.path.join(path, n))]
        if subdirs:
            for name in files:
                if is_photo(name):
                    if gallery:
                        skipped.append(Skipped(os.path.join(path, name),
                                               "not inside an identity folder"))
                    else:
                        units.append(_Unit("photo", os.path.join(path, name)))
            for identity in subdirs:
                folder = os.path.join(path, identity)
                for name in _visible(folder):
                    file = os.path.join(folder, name)
                    if os.path.isfile(file) and is_photo(name):
                        units.append(_Unit("photo", file, identity))
                    else:
                        skipped.append(Skipped(file, "not a photo"))
        elif any(is_photo(n) for n in files):
            identity = os.path.basename(os.path.abspath(path)) if gallery else None
            for name in files:
                file = os.path.join(path, name)
                if is_photo(name):
                    units.append(_Unit("photo", file, identity))
                else:
                    skipped.append(Skipped(file, "not a photo"))
        elif files:
            names_map = label_names(path)
            units += [_Unit("pickle", os.path.join(path, n), names=names_map) for n in files]
        else:
            raise GalleryInputError(f"{path}: empty folder")
    if gallery:  # refused now, not after hours of encoding, when the index stores the name
        units, unstorable = _with_utf8_names(units)
        skipped += unstorable
    return units, skipped


def _with_utf8_names(units: list[_Unit]) -> tuple[list[_Unit], list[Skipped]]:
    """``units`` whose path and identity have a UTF-8 form (the index stores both as
    UTF-8), and the others as skipped: a name of undecodable bytes, from an old archive."""
    kept, skipped = [], []
    for unit in units:
        try:
            os.path.abspath(unit.path).encode("utf-8")
            (unit.identity or "").encode("utf-8")
        except UnicodeEncodeError:
            skipped.append(Skipped(unit.path, "its name is not valid UTF-8 (the index keeps "
                                              "names as UTF-8); rename it"))
        else:
            kept.append(unit)
    return kept, skipped


def photo_preparer(preparer: Any) -> Any:
    """``preparer``, or a new ``common.faces.FacePreparer`` (GalleryInputError without it)."""
    if preparer is not None:
        return preparer
    try:
        from common.faces import FacePreparer
    except ImportError as exc:
        raise GalleryInputError(f"photos need common.faces (face detection and cropping), "
                                f"which cannot be imported here ({exc}); use pickle folders "
                                "or 32x32 faces") from None
    return FacePreparer(detector="auto")


def photo_errors() -> tuple[type[BaseException], ...]:
    """The errors that make one photo unusable (never a crash of the whole build)."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:
        from common.faces import FaceNotFoundError, ImageReadError
        errors += [ImageReadError, FaceNotFoundError]
    except ImportError:
        pass
    return tuple(errors)


def _pickle_rows(unit: _Unit) -> Batch:
    """Every row of one pickle file, pixels rounded to uint8 (the encoder's input)."""
    from common.data.pickle_folder import load_pickle_file
    from common.data.preprocess import to_nhwc

    x, y = load_pickle_file(unit.path)
    faces = np.clip(np.rint(to_nhwc(x)), 0, 255).astype(np.uint8)
    names = unit.names or {}
    labels = [int(v) for v in y]
    known: list[int | None] = list(labels)  # every row of a pickle has its label
    return Batch(faces, [names.get(v, str(v)) for v in labels], known,
                 [f"{os.path.abspath(unit.path)}#{row}" for row in range(len(labels))])


def read_batches(units: list[_Unit], report: InputReport, preparer: Any = None,
                 progress: Any = None) -> Iterator[Batch]:
    """Faces of ``units`` in batches; unusable photos and pickle files go to ``report``."""
    from common.data.errors import DataFormatError

    photos = [u for u in units if u.kind == "photo"]
    preparer = photo_preparer(preparer) if photos else None
    unusable = photo_errors()
    pending = Batch(np.zeros((0, 32, 32, 3), np.uint8), [], [], [])
    faces: list[np.ndarray] = []

    def flush() -> Batch:
        nonlocal pending, faces
        out = Batch(np.stack(faces) if faces else np.zeros((0, 32, 32, 3), np.uint8),
                    pending.identities, pending.labels, pending.sources)
        pending, faces = Batch(out.faces[:0], [], [], []), []
        return out

    for unit in units:
        if unit.kind == "pickle":
            try:
                batch = _pickle_rows(unit)
            except (DataFormatError, OSError) as exc:
                report.skipped.append(Skipped(unit.path, str(exc)))
                _advance(progress, inputs=1, skipped=1)
                continue
            report.faces += len(batch.sources)
            for start in range(0, len(batch.sources), BATCH):
                end = start + BATCH
                yield Batch(batch.faces[start:end], batch.identities[start:end],
                            batch.labels[start:end], batch.sources[start:end])
            _advance(progress, inputs=1)
            continue
        try:
            prepared = preparer.prepare_file(unit.path)
            face = np.asarray(prepared.face)
            if face.dtype != np.uint8 or face.shape != (32, 32, 3):
                raise ValueError(f"prepared face is {face.dtype} {face.shape}, not uint8 32x32x3")
        except unusable as exc:
            report.skipped.append(Skipped(unit.path, str(exc) or type(exc).__name__))
            _advance(progress, inputs=1, skipped=1)
            continue
        faces.append(face)
        pending.identities.append(unit.identity)
        pending.labels.append(None)
        pending.sources.append(os.path.abspath(unit.path))
        report.faces += 1
        _advance(progress, inputs=1)
        if len(faces) >= BATCH:
            yield flush()
    if faces:
        yield flush()


PROGRESS_SECONDS = 5.0  # a progress line this often when stderr is not a terminal


def done_line(progress: Any) -> str:
    """The last line of a build's, add's or query's progress: what was done, how fast."""
    elapsed = max(progress.clock() - progress.start, 1e-9)
    faces, skipped = progress.counts.get("faces", 0), progress.counts.get("skipped", 0)
    of = f"/{progress.total:,}" if progress.total is not None else ""
    return (f"{progress.label}: done: {faces:,} faces encoded from {progress.done:,}{of} "
            f"inputs, {skipped:,} skipped, {elapsed:.1f} s ({faces / elapsed:,.0f} faces/s)")


def _advance(progress: Any, inputs: int = 0, skipped: int = 0) -> None:
    if progress is not None:  # a common.io.progress.Progress: inputs are its steps
        progress.advance(inputs, skipped=skipped)
