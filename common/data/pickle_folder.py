"""Read and write the original "32x32 vector folders" (DDH / DCBH layout).

A folder holds pickle files; each is a tuple ``(x, y)`` with ``x`` a float array
(n, 3072) of 32x32 RGB images flattened channel-first and ``y`` an int array (n,)
of identity labels. A folder is read by sorting the file names and stacking the
parts in that order, exactly as the original ``load_data_split_pickle`` did.

The reader refuses what it would misread rather than guess: x must be exactly 2-D
(n, 3072) (an (n, 32, 32, 3) NHWC array reshaped into rows would be channel-mixed
garbage), pixels must lie in ``PIXEL_RANGE`` and be finite, and what is read at once
(a file, a folder) must be in the 0..255 scale (common.data.pixel_scale); labels must
be exact integers 0..``MAX_LABEL``. Images whose pixels are all equal (black frames)
are legal data: they are kept, counted, and the count is logged as a warning.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import time
import warnings
import numpy as np
from absl import logging

from common.data.errors import DataFormatError, DataFormatWarning
from common.data.pixel_scale import check_pixel_scale
from common.data.safe_pickle import cut, restricted_loads

IMAGE_SIZE = 32
CHANNELS = 3
ROW_WIDTH = CHANNELS * IMAGE_SIZE * IMAGE_SIZE  # 3072
# Accepted pixel values: 0..255 with a tolerance of 1 on each side for resampling
# overshoot (a resized image may hold -0.4 or 255.3). Values outside are data in another
# scale or corrupt data, which the per-split normalisation would silently absorb.
PIXEL_RANGE = (-1.0, 256.0)
# Labels are class indices 0..K-1, at most this one (training's MAX_CLASSES is one more:
# beyond it the classifier alone would need gigabytes). The bound also keeps every label
# exact in int64: a float 1e300 or a uint64 near 2**64 would not survive the cast.
MAX_LABEL = 999_999
ROW_LAYOUT = (f"each row one image's {CHANNELS}x{IMAGE_SIZE}x{IMAGE_SIZE} = {ROW_WIDTH} values, "
              "channel-first (all red, then green, then blue; each plane row-major), flattened")


def list_data_files(folder: str | os.PathLike) -> list[str]:
    """Sorted paths of the data files in ``folder``.

    As in the original every regular file counts, except hidden ones (names starting
    with '.', e.g. ``.DS_Store``), which the original would have tried to unpickle.

    Raises:
        DataFormatError: the folder is missing, not a folder, holds no data file, or
            holds a broken symbolic link (its rows would otherwise go missing unsaid).
    """
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise DataFormatError(folder, "folder does not exist")
    if not os.path.isdir(folder):
        raise DataFormatError(folder, "is not a folder")
    visible = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    for name in visible:  # skipped as "not a file", its rows would go missing unsaid
        link = os.path.join(folder, name)
        if os.path.islink(link) and not os.path.exists(link):
            raise DataFormatError(link, "a symbolic link whose target is missing (or a link "
                                        "loop); restore its target or remove the link")
    names = [n for n in visible if os.path.isfile(os.path.join(folder, n))]
    if not names:
        raise DataFormatError(folder, "folder holds no data files")
    return [os.path.join(folder, n) for n in names]


def _label_list(path: str, y: list | tuple) -> np.ndarray:
    """A flat list of numbers as an array; anything nested or textual is refused first.

    ``np.asarray`` of a list copies every element: a list of references to one stored
    array (memo reuse in the pickle) would materialise it many times over, so only
    scalars are accepted here.
    """
    for value in y:
        if isinstance(value, (str, bytes)):
            dtype = np.asarray(value).dtype
            raise DataFormatError(
                path, f"labels must be integers, got dtype {dtype} in the label list")
        if not isinstance(value, (numbers.Number, np.generic)):
            raise DataFormatError(
                path, f"labels must be one-dimensional integers, found a {type(value).__name__} "
                      "in the label list")
    try:
        return np.asarray(y)
    except Exception as exc:  # e.g. integers beyond any dtype
        raise DataFormatError(path, f"labels are not an array ({exc})") from None


def _shown(label: np.generic) -> str:
    """A label for a message: exact for integers of any size, short for floats."""
    return f"{label:g}" if isinstance(label, np.floating) else str(int(label))


def _as_labels(path: str, y: object) -> np.ndarray:
    """Validate one file's labels and return them as int64."""
    if isinstance(y, (list, tuple)):
        y = _label_list(path, y)
    elif not isinstance(y, np.ndarray):
        raise DataFormatError(path, f"labels must be an array (n,), got {type(y).__name__}")
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataFormatError(path, f"labels must be one-dimensional, got shape {y.shape}")
    if y.size == 0:
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        inexact = ~np.isfinite(y) | (y != np.round(y))
        if np.any(inexact):
            raise DataFormatError(path, f"labels must be integers, found {y[inexact][0]!r}")
    elif y.dtype.kind not in "iu":
        raise DataFormatError(path, f"labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise DataFormatError(path, f"labels must be non-negative, found {_shown(y.min())}")
    if y.max().item() > MAX_LABEL:  # compared as a Python number: exact for every dtype
        raise DataFormatError(
            path, f"label {_shown(y.max())} is above {MAX_LABEL}, the largest accepted: labels "
                  f"are class indices 0..K-1 with at most {MAX_LABEL + 1} classes; relabel "
                  "the identities 0, 1, 2, ...")
    return y.astype(np.int64)


def _layout_error(path: str, shape: tuple[int, ...]) -> DataFormatError:
    """The refusal of an x that is not (n, 3072), with a conversion hint where one is known."""
    n = shape[0] if shape else "n"
    if len(shape) == 4 and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, CHANNELS):
        hint = (f"; it looks like NHWC images (n, {IMAGE_SIZE}, {IMAGE_SIZE}, {CHANNELS}): "
                f"convert with x.transpose(0, 3, 1, 2).reshape({n}, {ROW_WIDTH})")
    elif len(shape) == 4 and shape[1:] == (CHANNELS, IMAGE_SIZE, IMAGE_SIZE):
        hint = (f"; it looks like NCHW images (n, {CHANNELS}, {IMAGE_SIZE}, {IMAGE_SIZE}): "
                f"flatten with x.reshape({n}, {ROW_WIDTH})")
    else:
        hint = ""
    return DataFormatError(
        path, f"images must be a 2-D array (n, {ROW_WIDTH}), {ROW_LAYOUT}; "
              f"got shape {shape}{hint}")


def _check_pixel_values(path: str, x: np.ndarray, out: np.ndarray) -> int:
    """Refuse non-finite and out-of-range pixels; return the number of constant images.

    One pass of per-row minima and maxima serves all three (NaN propagates into both).
    """
    if out.size == 0:
        return 0
    row_min, row_max = out.min(axis=1), out.max(axis=1)
    low, high = PIXEL_RANGE
    bad_rows = np.flatnonzero(~((row_min >= low) & (row_max <= high)))
    if bad_rows.size:
        row = int(bad_rows[0])
        values = out[row]
        if not np.all(np.isfinite(values)):
            what = "non-finite" if not np.all(np.isfinite(x[row])) else "out-of-float32-range"
            raise DataFormatError(path, f"{what} pixel value in row {row}")
        value = float(values[(values < low) | (values > high)][0])
        raise DataFormatError(
            path, f"pixel value {value:g} in row {row} is outside the accepted range "
                  f"{low:g}..{high:g} (pixels are 0..255, with a tolerance of 1 for resampling "
                  "overshoot); rescale the images to 0..255")
    return int(np.count_nonzero(row_min == row_max))


def _as_pixels(path: str, x: object) -> tuple[np.ndarray, int]:
    """Validate one file's images; return them as float32 (n, 3072) and the constant-image count."""
    if not isinstance(x, np.ndarray):  # a list of row arrays could repeat one stored row
        raise DataFormatError(
            path, f"images must be a numpy array (n, {ROW_WIDTH}), got {type(x).__name__}")
    if x.dtype.kind not in "fiu":
        raise DataFormatError(path, f"images must be numeric, got dtype {x.dtype}")
    if x.ndim != 2:
        raise _layout_error(path, x.shape)
    if x.shape[1] != ROW_WIDTH:
        raise DataFormatError(
            path, f"each row must hold {ROW_WIDTH} values (3x32x32, channel-first, flattened), "
                  f"got {x.shape[1]} (shape {x.shape})")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught below
        out = x.astype(np.float32, copy=False)
    return out, _check_pixel_values(path, x, out)


def _warn_constant_images(path: str, constant: int, total: int) -> None:
    """Constant images are legal (black frames) but worth knowing about: log their count."""
    if constant:
        logging.warning("%s: %d of %d images are constant (every pixel equal, e.g. black "
                        "frames); kept as data", path, constant, total)


def _read_file(path: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Load and validate one ``(x, y)`` pickle; also count its constant images."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    except MemoryError:
        raise DataFormatError(path, f"{os.path.getsize(path):,} bytes: too large to read "
                                    "into this machine's memory") from None
    if not data:
        raise DataFormatError(path, "file is empty")
    try:
        obj = restricted_loads(data)
    except EOFError:
        raise DataFormatError(path, "file is truncated (unexpected end of pickle data)") from None
    except pickle.UnpicklingError as exc:
        raise DataFormatError(path, f"not a valid data pickle: {cut(str(exc), 200)}") from None
    except Exception as exc:  # corrupt streams raise many kinds of errors
        # the text may repeat a hostile file's values (numpy's own errors do): cut it
        raise DataFormatError(path, f"corrupt pickle ({type(exc).__name__}: "
                                    f"{cut(str(exc), 200)})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        got = type(obj).__name__
        if isinstance(obj, (tuple, list)):
            got += f" of length {len(obj)}"
        raise DataFormatError(path, f"expected a pickled tuple (x, y), got {got}")
    x, constant = _as_pixels(path, obj[0])
    y = _as_labels(path, obj[1])
    if len(x) != len(y):
        raise DataFormatError(path, f"{len(x)} images but {len(y)} labels")
    return x, y, constant


def load_pickle_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate one ``(x, y)`` pickle; returns float32 (n, 3072), int64 (n,).

    Pixels within -1..1 (not all equal) are refused, and a narrow pixel span warned
    about (common.data.pixel_scale). Constant images (every pixel equal) are kept; their
    count is logged as a warning.
    """
    path = os.fspath(path)
    x, y, constant = _read_file(path)
    check_pixel_scale(path, x)
    _warn_constant_images(path, constant, len(y))
    return x, y


def load_pickle_folder(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load a whole folder in the original layout.

    Args:
        path: folder of ``(x, y)`` pickle files (Python 2 or Python 3 pickles).

    Returns:
        ``(x, y)``: x float32 (n, 3072) channel-first flattened pixels, y int64 (n,),
        the files' parts stacked in sorted file-name order.

    Raises:
        DataFormatError: the folder is missing or empty, or a file is truncated,
            corrupt, names a global other than numpy's array machinery, declares
            arrays larger than itself, or holds x other than 2-D (n, 3072), pixels
            outside ``PIXEL_RANGE`` or non-finite, or labels other than integers
            0..``MAX_LABEL``. The message names the file. Or the whole split's pixels
            lie within -1..1 (scaled, not 0..255; the message names the folder).

    A narrow pixel span over the folder is warned about (``DataFormatWarning``,
    common.data.pixel_scale). Constant images (every pixel equal) are kept; the
    folder's count of them is logged as one warning.
    """
    files = list_data_files(path)
    start = time.perf_counter()
    xs, ys, constant = [], [], 0
    for file in files:
        x, y, file_constant = _read_file(file)
        xs.append(x)
        ys.append(y)
        constant += file_constant
    x = np.concatenate(xs) if len(xs) > 1 else xs[0]
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    check_pixel_scale(os.fspath(path), x)
    _warn_constant_images(os.fspath(path), constant, len(y))
    logging.info("loaded %s: %d images from %d files in %.1fs",
                 os.fspath(path), len(y), len(files), time.perf_counter() - start)
    return x, y


def check_test_labels(train_y: np.ndarray, test_y: np.ndarray, test_path: str = "test split",
                      strict: bool = False) -> np.ndarray:
    """Report test labels that never occur in the train split.

    Such queries have no relevant database item (their AP is 0, as in the original) and
    a classifier sized on the train labels cannot predict them, so this warns
    (``DataFormatWarning``) by default and raises ``DataFormatError`` when ``strict``.

    Returns:
        The sorted missing labels (empty when all is well).
    """
    missing = np.setdiff1d(np.unique(test_y), np.unique(train_y))
    if missing.size:
        shown = ", ".join(str(int(v)) for v in missing[:10]) + (" ..." if missing.size > 10 else "")
        reason = (f"{missing.size} test label(s) never occur in the train split ({shown}); "
                  "their queries have no relevant item")
        if strict:
            raise DataFormatError(test_path, reason)
        warnings.warn(f"{test_path}: {reason}", DataFormatWarning, stacklevel=2)
    return missing


def write_pickle_folder(path: str | os.PathLike, x: np.ndarray, y: np.ndarray,
                        rows_per_file: int = 1000, protocol: int = 4,
                        overwrite: bool = False) -> list[str]:
    """Write ``(x, y)`` as a folder of ``part_NNN.pkl`` files in the original layout.

    Each file is first written under a temporary name and renamed into place, so an
    interrupted write never leaves a truncated ``.pkl`` behind.

    Args:
        path: output folder (created).
        x: (n, 3072) pixels, channel-first flattened.
        y: (n,) integer labels.
        rows_per_file: rows per file.
        protocol: pickle protocol (2 loads in Python 2 as well).
        overwrite: replace existing ``.pkl`` files instead of refusing.

    Returns:
        The written file paths, in order.
    """
    path = os.fspath(path)
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[1] != ROW_WIDTH or len(x) != len(y):
        raise ValueError(f"expected x (n, {ROW_WIDTH}) and y (n,), got {x.shape} and {y.shape}")
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    os.makedirs(path, exist_ok=True)
    existing = [n for n in os.listdir(path) if n.endswith(".pkl")]
    if existing and not overwrite:
        raise FileExistsError(f"{path}: already holds {len(existing)} .pkl files (pass overwrite)")
    for name in existing:
        os.remove(os.path.join(path, name))
    n_files = max(1, math.ceil(len(y) / rows_per_file))
    digits = max(3, len(str(n_files - 1)))
    written = []
    for i in range(n_files):
        part = slice(i * rows_per_file, (i + 1) * rows_per_file)
        name = f"part_{i:0{digits}d}.pkl"
        target = os.path.join(path, name)
        tmp = os.path.join(path, f".{name}.tmp")  # hidden: never read as data
        with open(tmp, "wb") as f:
            pickle.dump((x[part], y[part]), f, protocol=protocol)
        os.replace(tmp, target)
        written.append(target)
    return written

