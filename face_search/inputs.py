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

Every file of a folder that is not read (a text file beside the identity folders, one that
is not a photo in a photo folder) is listed as skipped, with the reason. A folder that
holds both pickle files (``.pkl``, ``.pickle``) and sub-folders is neither layout and is
refused, naming it, rather than read as a gallery whose pickles would go unread; so is a
folder with nothing to read (empty, or only skipped files).

Photos go through ``common.faces`` (detection and cropping to 32x32). A photo that cannot
be read or holds no face, or a damaged pickle file, is counted, reported and skipped:
one bad file never stops a build.

Which preparation photos get: an index records how its photos were cut (``GalleryIndex.faces``,
a ``FacePreparer.preparation()`` record), because codes of faces cut two different ways
are not comparable. :func:`gallery_preparer` (photos added to an index) uses the recorded
preparation and refuses another one; :func:`query_preparer` (query photos) uses it unless
the caller names a detector, and then warns when the faces are cut otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterator, Mapping

import numpy as np

from common.io import json_files
from face_search.errors import GalleryInputError, PreparationError

PHOTO_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm",
                              ".pgm", ".tif", ".tiff"})
PICKLE_EXTENSIONS = frozenset({".pkl", ".pickle"})  # what marks a file as a pickle part
GALLERY_LAYOUT = "a folder with sub-folders is a photo gallery DIR/<identity>/<photo>"
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
    """The photos and pickle files to read, in order, and what is skipped up front (every
    file seen that will not be read is listed, with the reason).

    Raises:
        GalleryInputError: a path is missing, a file that is not a photo, a folder that
            holds both pickle files and sub-folders (neither layout), or a folder with
            nothing to read (empty, or only skipped files).
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
        found, passed = _plan_folder(path, gallery)
        units += found
        skipped += passed
    if gallery:  # refused now, not after hours of encoding, when the index stores the name
        units, unstorable = _with_utf8_names(units)
        skipped += unstorable
    return units, skipped


def is_pickle(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in PICKLE_EXTENSIONS


def _some(names: list[str], shown: int = 3) -> str:
    """``names`` for a message: the first few, and how many more."""
    more = f", ... ({len(names) - shown:,} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def skipped_words(skipped: list[Skipped]) -> str:
    """`` (N input(s) skipped: the first, with its reason, ...)`` for a one-line message;
    ``""`` when none was skipped."""
    if not skipped:
        return ""
    more = "; ..." if len(skipped) > 1 else ""
    return (f" ({len(skipped):,} input(s) skipped: {skipped[0].source}: "
            f"{skipped[0].reason}{more})")


def _plan_folder(path: str, gallery: bool) -> tuple[list[_Unit], list[Skipped]]:
    """:func:`plan` of one folder, by its layout (module docstring)."""
    units: list[_Unit] = []
    skipped: list[Skipped] = []
    names = _visible(path)
    subdirs = [n for n in names if os.path.isdir(os.path.join(path, n))]
    files = [n for n in names if os.path.isfile(os.path.join(path, n))]
    if subdirs:
        pickles = [n for n in files if is_pickle(n)]
        if pickles:  # a pickle folder has no sub-folder, a photo gallery no pickle file
            raise GalleryInputError(
                f"{path}: holds both pickle files ({_some(pickles)}) and sub-folders "
                f"({_some(subdirs)}), so it is neither a pickle folder (files only) nor a "
                "photo gallery (DIR/<identity>/<photo>); move the pickle files into a folder "
                "of their own, or the sub-folders out of it")
        for name in files:
            file = os.path.join(path, name)
            if not is_photo(name):
                skipped.append(Skipped(file, f"not a photo ({GALLERY_LAYOUT})"))
            elif gallery:
                skipped.append(Skipped(file, "not inside an identity folder"))
            else:
                units.append(_Unit("photo", file))
        for identity in subdirs:
            folder = os.path.join(path, identity)
            for name in _visible(folder):
                file = os.path.join(folder, name)
                if os.path.isfile(file) and is_photo(name):
                    units.append(_Unit("photo", file, identity))
                else:
                    skipped.append(Skipped(file, "not a photo"))
    elif any(is_photo(n) for n in files):
        owner = os.path.basename(os.path.abspath(path)) if gallery else None
        for name in files:
            file = os.path.join(path, name)
            if is_photo(name):
                units.append(_Unit("photo", file, owner))
            else:
                skipped.append(Skipped(file, "not a photo"))
    elif files:
        names_map = label_names(path)
        units += [_Unit("pickle", os.path.join(path, n), names=names_map) for n in files]
    else:
        raise GalleryInputError(f"{path}: empty folder")
    if not units:  # an input that gives nothing is a mistake, as an empty folder is
        why = skipped_words(skipped) or f" ({GALLERY_LAYOUT}, and its sub-folders hold none)"
        raise GalleryInputError(f"{path}: no photo or pickle file to read in it{why}")
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


INSTALL_FACES = "pip install 'face-hashing-tf[faces]'"
QUERY_FIX = ("or name a detector (--detector, or a detector or preparer in Python) to search "
             "with it anyway, comparing faces cut two different ways")
ADD_FIX = "or build a new index for photos prepared another way"


def _faces() -> ModuleType:
    """``common.faces`` (GalleryInputError where it cannot be imported)."""
    try:
        import common.faces as faces
    except ImportError as exc:
        raise GalleryInputError(f"photos need common.faces (face detection and cropping), "
                                f"which cannot be imported here ({exc}); use pickle folders "
                                "or 32x32 faces") from None
    return faces


def photo_preparer(preparer: Any) -> Any:
    """``preparer`` if it is a preparer, else a new ``common.faces.FacePreparer`` with the
    detector it names (None: ``"auto"``); GalleryInputError without common.faces."""
    if preparer is not None and not isinstance(preparer, str):
        return preparer
    return _faces().FacePreparer(detector=preparer or "auto")


def preparation_record(preparer: Any) -> dict[str, Any] | None:
    """What an index records of ``preparer``: its ``preparation()`` and the libraries'
    ``versions`` (information, never compared); None for a preparer that does not
    describe how it cuts faces."""
    describe = getattr(preparer, "preparation", None)
    if describe is None:
        return None
    record = dict(describe())
    versions = getattr(preparer, "versions", None)
    if versions is not None:
        record["versions"] = dict(versions())
    return record


def describe_preparation(record: Mapping[str, Any] | None) -> str:
    """A preparation record in words (``center (center_fraction 0.5)``)."""
    if record is None:
        return "a preparer that does not describe itself"
    return str(_faces().describe_preparation(record))


def recorded_preparer(record: Mapping[str, Any], where: str, fix: str = QUERY_FIX) -> Any:
    """A preparer that cuts faces as the index ``where`` records (``record``).

    Raises:
        PreparationError: it cannot be made here (the recorded detector mtcnn is not
            installed, or a record this code does not know), naming the index's
            preparation, the install command and ``fix`` (the other way out).
    """
    faces = _faces()
    if record.get("detector") == "mtcnn" and not faces.preparer.mtcnn_importable():
        raise PreparationError(
            f"{where}: the index's photos were prepared with detector "
            f"{describe_preparation(record)}, and the mtcnn package is not installed here: "
            f"install the faces extra ({INSTALL_FACES}), {fix}")
    try:
        return faces.FacePreparer.from_preparation(record)
    except ValueError as exc:
        raise PreparationError(
            f"{where}: the index records how its photos were prepared in a way this code "
            f"cannot use ({exc}); {fix}") from None


def _named(detector: str, record: Mapping[str, Any], where: str, fix: str) -> Any:
    """A preparer for a detector name: the recorded preparation (crop settings included)
    when the name resolves to the recorded detector, else that detector's defaults."""
    if _faces().preparer.resolve_detector(detector) == record.get("detector"):
        return recorded_preparer(record, where, fix)
    return photo_preparer(detector)


def query_preparer(given: Any, record: Mapping[str, Any] | None,
                   where: str) -> tuple[Any, str | None]:
    """The preparer for query photos of the index ``where`` whose photos were prepared as
    ``record`` says (None: not recorded), and a warning when it cuts faces otherwise.

    ``given`` None: the recorded preparation (no record: detector ``"auto"``); a detector
    name: that detector (with the recorded crop settings when it is the recorded one); a
    preparer: used as it is. Why a warning, not a refusal: a query is read-only, and a
    caller may knowingly search with another detector (the recorded one not installed).

    Raises:
        PreparationError: ``given`` is None and the recorded preparation cannot be made
            here (:func:`recorded_preparer`).
    """
    if record is None:
        return photo_preparer(given), None
    if given is None:
        return recorded_preparer(record, where, QUERY_FIX), None
    preparer = _named(given, record, where, QUERY_FIX) if isinstance(given, str) else given
    mine = preparation_record(preparer)
    if mine is not None and _faces().same_preparation(mine, record):
        return preparer, None
    return preparer, (f"{where}: the index's photos were prepared with detector "
                      f"{describe_preparation(record)}, query photos are prepared with "
                      f"detector {describe_preparation(mine)}: their codes are compared "
                      "across two different preparations, which makes retrieval worse "
                      "(leave out --detector, or the preparer in Python, to use the "
                      "index's preparation)")


def gallery_preparer(given: Any, record: Mapping[str, Any] | None, where: str) -> Any:
    """The preparer for photos added to the index ``where`` whose photos were prepared as
    ``record`` says (None: not recorded yet): the recorded preparation, or ``given``
    (a detector name or a preparer, as in :func:`query_preparer`) when it cuts faces the
    same way. Called before any photo is read, so a refusal changes nothing.

    Raises:
        PreparationError: ``given`` cuts faces otherwise than the index's photos were cut
            (or does not say how it cuts them), or the recorded preparation cannot be made
            here.
    """
    if record is None:
        return photo_preparer(given)
    if given is None:
        return recorded_preparer(record, where, ADD_FIX)
    if isinstance(given, str):  # compared before it is made: no MTCNN loaded to refuse it
        mine = _faces().preparer.default_preparation(given)
        if mine["detector"] == record.get("detector"):
            return recorded_preparer(record, where, ADD_FIX)
        preparer = None
    else:
        preparer, mine = given, preparation_record(given)
    if preparer is not None and mine is not None and _faces().same_preparation(mine, record):
        return preparer
    raise PreparationError(
        f"{where}: the index's photos were prepared with detector "
        f"{describe_preparation(record)}, these photos would be prepared with detector "
        f"{describe_preparation(mine)}; codes of faces cut two different ways cannot be "
        "compared, so nothing was added. Add them with the index's preparation (leave out "
        "--detector, or the preparer in Python), or build a new index for photos prepared "
        "this way")


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
