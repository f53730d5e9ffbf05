"""From a photo to the 32x32 face the models take: detect, cut, level, shrink.

Why one class for both uses: the converter prepares training faces and the search service
prepares query faces; a query prepared otherwise than the training faces would be coded
from a different layout. ``FacePreparer`` holds the choice of detector and the crop
settings; ``prepare`` does the same for a photo from either place.

Detectors: ``"mtcnn"`` (the ``mtcnn`` package; the largest face is kept when there are
several, :class:`FaceNotFoundError` when there is none), ``"center"`` (the centre crop of
:mod:`common.faces.crops`, no detection: every image gives a face), ``"auto"`` (mtcnn when
the package is installed, else center; which one is logged once per process).

A preparation (:meth:`FacePreparer.preparation`) is what decides the face: the method and
its crop settings, not the library versions or the pixel limit. A gallery index records
the preparation of its photos, because codes of faces cut two different ways are not
comparable: :meth:`FacePreparer.from_preparation` makes a preparer that cuts as a record
says, :func:`same_preparation` compares two and :func:`describe_preparation` names one.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import PIL
from absl import logging

from common.faces import crops
from common.faces.detector import mtcnn_importable, shared_mtcnn
from common.faces.errors import FaceNotFoundError, source_name
from common.faces.image_io import MAX_PIXELS, read_image

DETECTORS = ("auto", "mtcnn", "center")
# The settings that decide each method's face (a preparation record's keys besides
# "detector"); anything else in a record (e.g. "versions") is information, not compared.
PREPARATION_SETTINGS = {"mtcnn": ("face_size", "face_scale", "level_eyes"),
                        "center": ("face_size", "center_fraction")}
_announced: set[str] = set()


@dataclass(frozen=True)
class PreparedFace:
    """A photo's face ready for a model, and how it was found.

    Attributes:
        face: uint8 (32, 32, 3) RGB.
        box: (x, y, width, height) of the square cut from the photo, before any turn to
            level the eyes (may reach past the photo's edge); None only if unknown.
        faces_found: faces the detector saw (0 for the centre crop, which detects nothing).
        method: ``"mtcnn"`` or ``"center"``.
        note: what happened, in words (``3 faces found, kept the largest``).
    """

    face: np.ndarray
    box: tuple[int, int, int, int] | None
    faces_found: int
    method: str
    note: str


def _announce(message: str) -> None:
    """Log ``message`` once per process."""
    if message not in _announced:
        _announced.add(message)
        logging.info(message)


def resolve_detector(detector: str) -> str:
    """``"mtcnn"`` or ``"center"`` for a requested detector (``auto`` resolved).

    Raises:
        ValueError: an unknown name, or ``mtcnn`` asked for but not installed.
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown face detector {detector!r}; "
                         f"choose one of {', '.join(DETECTORS)}")
    if detector == "auto":
        method = "mtcnn" if mtcnn_importable() else "center"
        _announce(f"face detector: {method} (auto: the mtcnn package is "
                  f"{'installed' if method == 'mtcnn' else 'not installed, so centre crops'})")
        return method
    if detector == "mtcnn" and not mtcnn_importable():
        raise ValueError("face detector mtcnn: the mtcnn package is not installed "
                         "(pip install 'face-hashing-tf[faces]', or choose center)")
    return detector


def _check_image(image: np.ndarray, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or 0 in image.shape:
        got = (f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise ValueError(f"{name}: expected a uint8 (H, W, 3) RGB image, got {got}")


class FacePreparer:
    """Prepares photos as 32x32 faces, the same way for training data and queries.

    Args:
        detector: ``"auto"``, ``"mtcnn"`` or ``"center"`` (see the module docstring).
        level_eyes: with mtcnn, turn the crop so the eyes are level (the training faces
            are upright).
        face_scale: with mtcnn, crop side = this x sqrt(box width x box height).
        center_fraction: the centre crop's side as a fraction of the shorter side.
        max_pixels: photos with more pixels are refused (:class:`ImageReadError`).

    Raises:
        ValueError: an unknown detector, mtcnn asked for but not installed, bad fractions.
    """

    def __init__(self, detector: str = "auto", *, level_eyes: bool = True,
                 face_scale: float = crops.FACE_SCALE,
                 center_fraction: float = crops.CENTER_FRACTION,
                 max_pixels: int = MAX_PIXELS):
        if not 0.0 < center_fraction <= 1.0:
            raise ValueError(f"center_fraction must be in (0, 1], got {center_fraction}")
        if not 0.0 < face_scale <= 10.0:
            raise ValueError(f"face_scale must be in (0, 10], got {face_scale}")
        self.requested = detector
        self.method = resolve_detector(detector)
        self.level_eyes = bool(level_eyes)
        self.face_scale = float(face_scale)
        self.center_fraction = float(center_fraction)
        self.max_pixels = int(max_pixels)
        self._detector = shared_mtcnn() if self.method == "mtcnn" else None

    def settings(self) -> dict:
        """What decides the faces, for a data set's metadata."""
        out = {**self.preparation(), "detector_requested": self.requested,
               "max_pixels": self.max_pixels, "pillow_version": PIL.__version__}
        if self._detector is not None:  # the method is mtcnn
            out["mtcnn_version"] = self._detector.version
        return out

    def preparation(self) -> dict[str, Any]:
        """What decides the faces this preparer cuts (the method actually used, not
        ``auto``, and its crop settings): two preparers with equal preparations give the
        same face of a photo, so their faces' codes can be compared. No versions, no pixel
        limit: they do not change the face."""
        return _preparation(self.method, self.face_scale, self.level_eyes,
                            self.center_fraction)

    def versions(self) -> dict[str, str]:
        """The libraries that cut the faces (information for a record, never compared)."""
        out = {"pillow": str(PIL.__version__)}
        if self._detector is not None:
            out["mtcnn"] = str(self._detector.version)
        return out

    @classmethod
    def from_preparation(cls, record: Mapping[str, Any],
                         max_pixels: int = MAX_PIXELS) -> "FacePreparer":
        """A preparer that cuts faces as ``record`` (a :meth:`preparation`, as an index
        stores it) says, so that new faces are cut as the recorded ones were.

        Raises:
            ValueError: not a preparation record (an unknown detector, a setting missing or
                of the wrong type, another face size), or mtcnn recorded but not installed
                (the message of :func:`resolve_detector`).
        """
        detector = record.get("detector") if isinstance(record, Mapping) else None
        if detector not in PREPARATION_SETTINGS:
            raise ValueError(f"not a face preparation record: {record!r}")
        settings: dict[str, Any] = {key: record.get(key) for key in PREPARATION_SETTINGS[detector]}
        for key, value in settings.items():
            wanted = bool if key == "level_eyes" else (int, float)
            if isinstance(value, bool) != (wanted is bool) or not isinstance(value, wanted):
                raise ValueError(f"face preparation record: {key} is {value!r}")
        if settings["face_size"] != crops.FACE_SIZE:
            raise ValueError(f"face preparation record: faces of {settings['face_size']} "
                             f"pixels, this code cuts {crops.FACE_SIZE}")
        if detector == "mtcnn":
            return cls("mtcnn", level_eyes=settings["level_eyes"],
                       face_scale=settings["face_scale"], max_pixels=max_pixels)
        return cls("center", center_fraction=settings["center_fraction"],
                   max_pixels=max_pixels)

    def prepare(self, image: np.ndarray, name: str = "image") -> PreparedFace:
        """The 32x32 face of ``image`` (uint8 (H, W, 3) RGB); ``name`` names it in errors.

        Raises:
            FaceNotFoundError: mtcnn found no face.
            ValueError: ``image`` is not uint8 (H, W, 3).
        """
        _check_image(image, name)
        if self.method == "center":
            face, box = crops.cut_center(image, self.center_fraction)
            return PreparedFace(face, box, 0, "center", "centre crop (no face detector)")
        assert self._detector is not None  # the method is mtcnn
        found = self._detector.detect(image)
        if not found:
            raise FaceNotFoundError(name, "no face found")
        largest = found[0]
        square = crops.face_square(largest.box,
                                   largest.left_eye if self.level_eyes else None,
                                   largest.right_eye if self.level_eyes else None,
                                   self.face_scale)
        face = crops.cut_square(image, square)
        note = ("1 face found" if len(found) == 1
                else f"{len(found)} faces found, kept the largest")
        if self.level_eyes and abs(square.angle) >= 0.05:
            note += f"; turned {square.angle:+.1f} degrees to level the eyes"
        return PreparedFace(face, square.box(), len(found), "mtcnn", note)

    def prepare_file(self, path_or_bytes: str | bytes | os.PathLike) -> PreparedFace:
        """Read a photo (path or the file's bytes) and prepare its face.

        Raises:
            ImageReadError: not a usable image (see :func:`read_image`).
            FaceNotFoundError: mtcnn found no face.
        """
        image = read_image(path_or_bytes, self.max_pixels)
        return self.prepare(image, source_name(path_or_bytes))


def default_preparation(detector: str) -> dict[str, Any]:
    """The :meth:`FacePreparer.preparation` of ``FacePreparer(detector)``, without making
    it (no MTCNN loaded): to compare or name it before paying for it.

    Raises:
        ValueError: as :func:`resolve_detector`.
    """
    # a named detector is not resolved: naming mtcnn where it is not installed still
    # describes what it would cut (to refuse it without loading it)
    method = detector if detector in ("mtcnn", "center") else resolve_detector(detector)
    defaults = inspect.signature(FacePreparer.__init__).parameters
    return _preparation(method, defaults["face_scale"].default, defaults["level_eyes"].default,
                        defaults["center_fraction"].default)


def _preparation(method: str, face_scale: float, level_eyes: bool,
                 center_fraction: float) -> dict[str, Any]:
    """The one definition of a preparation record (see :meth:`FacePreparer.preparation`)."""
    out: dict[str, Any] = {"detector": method, "face_size": crops.FACE_SIZE}
    if method == "mtcnn":
        out.update(face_scale=float(face_scale), level_eyes=bool(level_eyes))
    else:
        out.update(center_fraction=float(center_fraction))
    return out


def comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a preparation record that decides the face (no ``versions``)."""
    keys = ("detector", *PREPARATION_SETTINGS.get(str(record.get("detector")), ()))
    return {key: record.get(key) for key in keys}


def same_preparation(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two preparation records cut the same face of a photo (versions ignored)."""
    return comparable(a) == comparable(b)


def describe_preparation(record: Mapping[str, Any]) -> str:
    """A preparation record in words, for messages: ``center (center_fraction 0.5)``,
    ``mtcnn (face_scale 1.2, eyes levelled)``."""
    detector = record.get("detector")
    if detector == "mtcnn":
        eyes = "eyes levelled" if record.get("level_eyes") else "eyes not levelled"
        details = [f"face_scale {record.get('face_scale')!r}", eyes]
    elif detector == "center":
        details = [f"center_fraction {record.get('center_fraction')!r}"]
    else:
        details = []
    if record.get("face_size", crops.FACE_SIZE) != crops.FACE_SIZE:
        details.append(f"face_size {record.get('face_size')!r}")
    return f"{detector}" + (f" ({', '.join(details)})" if details else "")
