"""Use an export from Python with strict input checks: nothing is ever cast for you.

Why: TensorFlow's Python client casts a numpy array of another dtype to the signature's
uint8 before the graph runs (0.5 -> 0, 300 -> 44): codes of a different image, silently.
:func:`load_encoder` refuses anything but uint8 (N, 32, 32, 3) and says how to convert.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from common.export.folder import (EXPORT_INFO, FORMAT, FORMAT_KEY, ExportDirError, has_marker,
                                  read_info, recover_export)
from common.export.serving import ANY_SIZE_SIGNATURE, IMAGE_SHAPE, SIGNATURE


def _conversion_hint(dtype: np.dtype) -> str:
    """How to turn images of ``dtype`` into raw uint8 pixels, explicitly."""
    if dtype.kind == "f":
        return ("if they hold 0..255 pixel values use np.clip(np.rint(x), 0, 255)"
                ".astype(np.uint8); if 0..1, multiply by 255 first")
    if dtype.kind in "iub":
        return "check they lie in 0..255, then x.astype(np.uint8)"
    return "decode them to uint8 RGB pixels first"


def _shape_hint(shape: tuple) -> str:
    """How to reach (N, 32, 32, 3) from ``shape``."""
    if tuple(shape) == IMAGE_SHAPE:
        return "one image without the batch axis: use x[None]"
    if len(shape) == 4 and shape[-1] == 1:
        return "grey images: use np.repeat(x, 3, axis=-1)"
    if len(shape) == 4 and shape[-1] == 3:
        return (f"resize to 32x32 first (the {ANY_SIZE_SIGNATURE} signature does a plain "
                "bilinear resize, no face cropping)")
    return "expected N RGB images of 32x32 pixels, NHWC"


def check_images(images: Any) -> Any:
    """``images`` unchanged if they are uint8 (N, 32, 32, 3), else a ValueError saying how
    to convert them. Never casts: a float image silently truncated to uint8 gives codes
    of a different image."""
    if not isinstance(images, (np.ndarray, tf.Tensor)):
        raise ValueError(f"images must be a numpy array or a tf.Tensor, got "
                         f"{type(images).__name__}; use np.asarray(x) and check its dtype")
    dtype = np.dtype(images.dtype.as_numpy_dtype if isinstance(images, tf.Tensor)
                     else images.dtype)
    if dtype != np.uint8:
        raise ValueError(f"images are {dtype.name}, the export takes raw uint8 pixels "
                         f"(nothing is cast for you): {_conversion_hint(dtype)}")
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"images have shape {shape}, the export takes (N, 32, 32, 3): "
                         f"{_shape_hint(shape)}")
    return images


class Encoder:
    """A loaded export: ``encoder(images)`` -> ``{"codes", "packed", "relaxed"}`` numpy arrays.

    Attributes:
        export_dir: the folder.
        info: its ``export_info.json``.
        num_bits: the code length.
    """

    def __init__(self, export_dir: str, info: dict, signature) -> None:
        self.export_dir = export_dir
        self.info = info
        self.num_bits = int(info["num_bits"])
        self._signature = signature

    def __call__(self, images: Any) -> dict[str, np.ndarray]:
        """Codes of uint8 (N, 32, 32, 3) images (ValueError for anything else)."""
        images = check_images(images)
        out = self._signature(images=tf.convert_to_tensor(images))
        return {key: value.numpy() for key, value in out.items()}


def load_encoder(export_dir: str) -> Encoder:
    """Load an export of this project for use from Python, with strict input checks.

    A previous export a killed export left aside is put back first.

    Raises:
        ExportDirError: the folder is not an export of this project.
    """
    export_dir = os.path.abspath(export_dir)
    recover_export(export_dir)
    if not os.path.isdir(export_dir):
        raise ExportDirError(f"{export_dir}: no such folder")
    if not has_marker(export_dir) or not os.path.isfile(
            os.path.join(export_dir, "saved_model.pb")):
        raise ExportDirError(f"{export_dir}: not an export of this project (no saved_model.pb "
                             f"and {EXPORT_INFO} with \"{FORMAT_KEY}\": \"{FORMAT}\")")
    info = read_info(export_dir)
    if info is None:  # removed or damaged since the check above
        raise ExportDirError(f"{export_dir}: {EXPORT_INFO} is missing or unreadable")
    signature = tf.saved_model.load(export_dir).signatures[SIGNATURE]
    return Encoder(export_dir, info, signature)
