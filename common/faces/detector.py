"""MTCNN face detection, loaded once per process and safe to call from several threads.

Why MTCNN (the ``mtcnn`` package, extra ``faces``): TensorFlow based like the rest of the
project, its weights ship inside the package (nothing is downloaded), and it gives five
keypoints with each box, which level the eyes. The package's own weight loader first
tries a file of the weight's bare name in the *current folder* and unpickles it
(``joblib.load``), so a stray ``pnet.lz4`` where a command runs would be executed; this
module always passes the absolute path of the files inside the installed package.

Photos are detected at a working size: shrunk so the longer side is at most
``DETECT_MAX_SIDE`` (a 50 MP photo would take minutes and gigabytes) and enlarged so the
shorter side is at least ``DETECT_MIN_SIDE`` (a 32x32 face, e.g. an already prepared one,
is found at 4x); boxes and keypoints are scaled back to the photo's pixels.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

DETECT_MAX_SIDE = 1024
DETECT_MIN_SIDE = 128
MIN_FACE_SIZE = 20          # pixels at the working size (the package's default)
_SMALLEST_USABLE_SIDE = 24  # below this at the working size MTCNN's pyramid is empty

_lock = threading.Lock()
_shared: "MtcnnDetector | None" = None


@dataclass(frozen=True)
class Detection:
    """One detected face in photo pixels: box (x, y, width, height), the detector's
    confidence, and the eye centres (``left_eye`` is the one on the image's left)."""

    box: tuple[float, float, float, float]
    confidence: float
    left_eye: tuple[float, float]
    right_eye: tuple[float, float]

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


def mtcnn_importable() -> bool:
    """Whether the ``mtcnn`` package is installed (checked without importing TensorFlow)."""
    return importlib.util.find_spec("mtcnn") is not None


def _working_scale(width: int, height: int) -> float:
    """The factor photos are resized by for detection (see the module docstring)."""
    scale = min(1.0, DETECT_MAX_SIDE / max(width, height))
    if min(width, height) * scale < DETECT_MIN_SIDE:
        scale = min(DETECT_MIN_SIDE / min(width, height), DETECT_MAX_SIDE / max(width, height))
    return scale


class MtcnnDetector:
    """The three MTCNN stages with the package's own weights, by absolute path."""

    def __init__(self, min_face_size: int = MIN_FACE_SIZE):
        mtcnn = importlib.import_module("mtcnn")
        stages = importlib.import_module("mtcnn.stages")
        weights = importlib.resources.files("mtcnn.assets.weights")
        self._model = mtcnn.MTCNN(stages=[
            stages.StagePNet(weights=str(weights / "pnet.lz4")),
            stages.StageRNet(weights=str(weights / "rnet.lz4")),
            stages.StageONet(weights=str(weights / "onet.lz4")),
        ])
        self.min_face_size = min_face_size
        try:
            self.version = importlib.metadata.version("mtcnn")
        except importlib.metadata.PackageNotFoundError:
            self.version = "unknown"
        self._calls = threading.Lock()

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Every face in ``image`` (uint8 (H, W, 3) RGB), largest first."""
        height, width = image.shape[:2]
        scale = _working_scale(width, height)
        work = image
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            work = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        if min(work.shape[:2]) < _SMALLEST_USABLE_SIDE:
            return []
        sx, sy = width / work.shape[1], height / work.shape[0]
        with self._calls:
            found = self._model.detect_faces(np.ascontiguousarray(work),
                                             min_face_size=self.min_face_size)
        detections = []
        for face in found or []:
            x, y, w, h = (float(v) for v in face["box"])
            points = face["keypoints"]
            eyes = sorted((float(points[eye][0]) * sx, float(points[eye][1]) * sy)
                          for eye in ("left_eye", "right_eye"))
            detections.append(Detection((x * sx, y * sy, w * sx, h * sy),
                                        float(face["confidence"]), eyes[0], eyes[1]))
        return sorted(detections, key=lambda d: -d.area)


def shared_mtcnn() -> MtcnnDetector:
    """The process's one detector (loading takes seconds; the model is reused)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = MtcnnDetector()
        return _shared
