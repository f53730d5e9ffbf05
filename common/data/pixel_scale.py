"""Whether a split's pixels are in the 0..255 scale that exports serve.

Training normalises each split with its own statistics, so a split scaled to 0..1 (or
-1..1) trains as well as a 0..255 one and nothing fails; but an export bakes the train
split's mean and std in and serves raw 0..255 images, which those constants map far
beyond the clip at +-1: every real face gets the same code. The per-pixel range check
(``PIXEL_RANGE``, -1..256) cannot see it, since 0..1 lies inside; the split's extremes can:

* refused (``DataFormatError``): every pixel within -1..1 (``SCALED_MAX``) but not all
  equal. Real 0..255 faces are never that dark throughout; a constant split is refused by
  the normalisation instead (common.data.preprocess), and constant images are legal data;
* warned (``DataFormatWarning``): pixels spanning fewer than ``NARROW_SPAN`` of the 256
  levels. It may be another scale (0..10, 4-bit values) or very dark, flat images, which
  the reader cannot tell apart, so it loads them and says so.
"""

from __future__ import annotations

import warnings

import numpy as np

from common.data.errors import DataFormatError, DataFormatWarning

SCALED_MAX = 1.0     # a split whose pixels all lie within -1..1 is in another scale
NARROW_SPAN = 32.0   # fewer levels than this between the darkest and brightest pixel: warned


def check_pixel_scale(path: str, x: np.ndarray) -> None:
    """Refuse or flag pixels ``x`` (read from ``path``) that cannot be 0..255 images.

    Raises:
        DataFormatError: all pixels within -1..1 and not all equal.

    Warns:
        DataFormatWarning: the pixels span fewer than ``NARROW_SPAN`` levels.
    """
    if not np.size(x):
        return
    low, high = float(np.min(x)), float(np.max(x))
    if low == high:
        return
    if -SCALED_MAX <= low and high <= SCALED_MAX:
        raise DataFormatError(
            path, f"every pixel lies in {low:g}..{high:g}: the images look scaled to 0..1 "
                  "(or -1..1), but pixels must be 0..255 (an export serves raw 0..255 images "
                  "with this data's normalisation, which would give every face the same code); "
                  "multiply by 255 (or map -1..1 to 0..255)")
    if high - low < NARROW_SPAN:
        warnings.warn(
            f"{path}: pixels span only {low:g}..{high:g}, {high - low:g} of the 255 levels of "
            "0..255 images: if the images are in another scale, rescale them to 0..255 (an "
            "export serves raw 0..255 images with this data's normalisation)",
            DataFormatWarning, stacklevel=3)
