"""The original preprocessing (``deprocess_image``) and the layout conversion.

The original normalises each split with its OWN global statistics: subtract the
array's mean (one scalar), divide by (std + 1e-5), multiply by 0.1, clip to [-1, 1].
The statistics are computed here in float64 (numpy's float32 reduction differs by a
few ulps) and applied in place on float32 to keep the memory at one copy.

A split whose pixels are all equal (standard deviation 0) is refused here, where the
normalisation would turn it into zeros: it holds no image information, and every
code computed from it would be the same. Single constant images inside a split
(black frames) are legal data; the reader counts them and logs a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from common.data.errors import DataFormatError
from common.data.pickle_folder import CHANNELS, IMAGE_SIZE, ROW_WIDTH

STD_EPSILON = 1e-5
SCALE = 0.1


@dataclass(frozen=True)
class Normalization:
    """The two constants of the original preprocessing for one split.

    Exported models bake the train split's constants in, so that raw pixels can be
    served without the data set.
    """

    mean: float
    std: float

    @classmethod
    def fit(cls, x: np.ndarray) -> "Normalization":
        """Global mean and (population) standard deviation of ``x``, in float64."""
        x = np.asarray(x)
        mean = float(np.mean(x, dtype=np.float64))
        # Two-pass variance in float64, chunked to bound the temporary memory.
        flat = x.reshape(-1)
        sq = 0.0
        for start in range(0, flat.size, 1 << 22):
            chunk = flat[start:start + (1 << 22)].astype(np.float64) - mean
            sq += float(np.dot(chunk, chunk))
        std = float(np.sqrt(sq / max(flat.size, 1)))
        return cls(mean=mean, std=std)

    def apply(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``clip((x - mean) / (std + 1e-5) * 0.1, -1, 1)`` as float32.

        Args:
            x: pixels, any shape.
            out: optional float32 array to write into (may be ``x`` itself).
        """
        x = np.asarray(x)
        if out is None:
            out = np.array(x, dtype=np.float32, copy=True)
        elif out is not x:
            np.copyto(out, x, casting="same_kind")
        scale = np.float32(SCALE / (self.std + STD_EPSILON))
        out -= np.float32(self.mean)
        out *= scale
        np.clip(out, -1.0, 1.0, out=out)
        return out


def preprocess_split(x: np.ndarray, in_place: bool = False,
                     source: str | os.PathLike = "split") -> tuple[np.ndarray, Normalization]:
    """Normalise one split with its own statistics, as the original did.

    Args:
        x: the split's pixels, any shape.
        in_place: overwrite ``x`` when it is float32.
        source: what ``x`` was read from (its folder), named by the error.

    Returns:
        ``(x_normalised float32, Normalization)``.

    Raises:
        DataFormatError: every pixel of a non-empty split is equal (std 0), so the
            normalisation would map the whole split to zeros.
    """
    norm = Normalization.fit(x)
    if np.size(x) and norm.std == 0.0:
        raise DataFormatError(
            source, f"all {np.size(x)} pixel values of the split equal {norm.mean:g} (standard "
                    "deviation 0): the original normalisation (x - mean) / (std + 1e-5) would "
                    "turn every image into zeros; the split holds no image information")
    out = x if (in_place and x.dtype == np.float32) else None
    return norm.apply(x, out=out), norm


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """(n, 3072) channel-first flattened rows -> (n, 32, 32, 3) float32, C-contiguous."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != ROW_WIDTH:
        raise ValueError(f"expected (n, {ROW_WIDTH}) rows, got shape {x.shape}")
    nchw = x.reshape(-1, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    return np.ascontiguousarray(nchw.transpose(0, 2, 3, 1), dtype=np.float32)


def to_rows(images: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) NHWC images -> (n, 3072) channel-first flattened rows (inverse of to_nhwc)."""
    images = np.asarray(images)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, CHANNELS):
        raise ValueError(f"expected (n, 32, 32, 3) images, got shape {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), ROW_WIDTH))
