"""Which photos a folder of identities holds: ``SRC/<identity>/<any/subfolders>/<photo>``.

Why its own module: the converter labels identities by this listing, so its order must
be fixed and documented. Identities are the visible sub-folders of ``SRC`` in sorted
name order (Python's code-point order, the order labels are given in); photos are the
files below each with an extension of :data:`PHOTO_EXTENSIONS` (any case), in sorted
order of their path relative to ``SRC``. Hidden files and folders (names starting with
``.``) are passed over; other files (a ``README.md`` at the top, ``notes.txt`` beside
the photos) are listed as ignored. Symbolic links to folders are followed; a folder
reached again through a link (a loop) is listed as ignored instead of read twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from common.data.errors import DataFormatError

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Identity:
    """One identity folder: its name and its photos (paths relative to the source folder)."""

    name: str
    photos: tuple[str, ...]


@dataclass(frozen=True)
class PhotoFolder:
    """A listed source folder: identities in label order, and the files passed over."""

    root: str
    identities: tuple[Identity, ...]
    ignored: tuple[str, ...] = field(default=())

    @property
    def photo_count(self) -> int:
        return sum(len(i.photos) for i in self.identities)


def _relative(root: str, path: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _walk_identity(root: str, folder: str) -> tuple[list[str], list[str]]:
    """(photos, ignored files) below one identity folder, relative to ``root``, sorted."""
    photos: list[str] = []
    ignored: list[str] = []

    def fail(exc: OSError) -> None:
        raise DataFormatError(exc.filename or folder, f"cannot list ({exc.strerror or exc})")

    # Linked sub-folders are followed (left out, their photos would be missing unsaid);
    # a folder already walked, reached again through a link, is not (a loop ends there).
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail, followlinks=True):
        info = os.stat(dirpath)
        if (info.st_dev, info.st_ino) in seen:
            ignored.append(_relative(root, dirpath) + "/ (a folder already read: link loop)")
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            is_photo = os.path.splitext(name)[1].lower() in PHOTO_EXTENSIONS
            (photos if is_photo else ignored).append(_relative(root, path))
    return sorted(photos), sorted(ignored)


def list_photo_folder(src: str | os.PathLike) -> PhotoFolder:
    """List ``src``'s identities and their photos (see the module docstring).

    Raises:
        DataFormatError: ``src`` is missing, not a folder, unreadable, or holds no
            identity folder with a photo.
    """
    root = os.fspath(src)
    if not os.path.exists(root):
        raise DataFormatError(root, "folder does not exist")
    if not os.path.isdir(root):
        raise DataFormatError(root, "is not a folder (expected SRC/<identity>/<photo>)")
    try:
        entries = sorted(os.listdir(root))
    except OSError as exc:
        raise DataFormatError(root, f"cannot list ({exc.strerror or exc})") from None
    identities, ignored = [], []
    for name in entries:
        if name.startswith("."):
            continue
        path = os.path.join(root, name)
        if not os.path.isdir(path):
            ignored.append(name)
            continue
        photos, other = _walk_identity(root, path)
        ignored += other
        identities.append(Identity(name, tuple(photos)))
    if not any(i.photos for i in identities):
        raise DataFormatError(
            root, f"holds no photos in identity folders (expected SRC/<identity>/<photo> with "
                  f"extensions {', '.join(PHOTO_EXTENSIONS)}; found {len(identities)} "
                  "sub-folders)")
    return PhotoFolder(root, tuple(identities), tuple(sorted(ignored)))
