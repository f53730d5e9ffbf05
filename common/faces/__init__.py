"""Photos to 32x32 faces, for training data and search queries alike.

The preparation, exactly:

1. :func:`read_image` decodes the file or upload with Pillow (JPEG, PNG, GIF first frame,
   BMP, WebP, TIFF, PPM/PGM; at most 50 megapixels, checked before decoding), applies the
   EXIF orientation and makes 8-bit RGB (grey and palette expanded, CMYK converted, alpha
   composited over black). Anything else raises :class:`ImageReadError`.
2. ``FacePreparer(detector)`` finds the face:

   * ``mtcnn``: MTCNN on the photo resized to at most 1024 px on its longer side (at
     least 128 px on its shorter side); several faces keep the largest box (noted), none
     raises :class:`FaceNotFoundError`. The crop is the square of side
     1.2 x sqrt(box width x box height) centred on the box, turned about its centre so
     the eyes are level, sampled bicubic at its own resolution with the photo's edge
     repeated past its border.
   * ``center``: the centred square of half the shorter side (no detection), as the
     project's LFW data was cut from 250x250 deep-funneled photos.
   * ``auto``: mtcnn when the ``mtcnn`` package is installed, else center.

3. The crop is shrunk to 32x32 with Lanczos (antialiased), as the training faces were.

:mod:`common.faces.crops` says why these numbers: they lay a detected face out in the
32x32 frame as the LFW deep-funneled training faces are laid out.

``FacePreparer.preparation()`` is the method and crop settings above (what decides the
face); a face search index records it, ``FacePreparer.from_preparation(record)`` cuts as a
record says, and :func:`same_preparation` / :func:`describe_preparation` compare and name
records.
"""

from common.faces.crops import CENTER_FRACTION, FACE_SCALE, FACE_SIZE
from common.faces.errors import FaceNotFoundError, ImageReadError
from common.faces.image_io import ACCEPTED_FORMATS, MAX_PIXELS, read_image
from common.faces.preparer import (DETECTORS, FacePreparer, PreparedFace, describe_preparation,
                                   same_preparation)

__all__ = [
    "ACCEPTED_FORMATS",
    "CENTER_FRACTION",
    "DETECTORS",
    "FACE_SCALE",
    "FACE_SIZE",
    "MAX_PIXELS",
    "FaceNotFoundError",
    "FacePreparer",
    "ImageReadError",
    "PreparedFace",
    "describe_preparation",
    "read_image",
    "same_preparation",
]
