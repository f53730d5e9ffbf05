"""Read and write the original "32x32 vector folders" (DDH / DCBH layout).

A folder holds pickle files; each is a tuple ``(x, y)`` with ``x`` a float array
(n, 3072) of 32x32 RGB images flattened channel-first and ``y`` an int array (n,)
of identity labels. A folder is read by sorting the file names and stacking the
parts in that order, exactly as the original ``load_data_split_pickle`` did.
"""

from __future__ import annotations

import math
import os
import pickle
import time
import warnings
import numpy as np
from absl import logging

from common.data.errors import DataFormatError, DataFormatWarning
from common.data.safe_pickle import restricted_loads

IMAGE_SIZE = 32
CHANNELS = 3
ROW_WIDTH = CHANNELS * IMAGE_SIZE * IMAGE_SIZE  # 3072


def list_data_files(folder: str | os.PathLike) -> list[str]:
    """Sorted paths of the data files in ``folder``.

    As in the original every regular file counts, except hidden ones (names starting
    with '.', e.g. ``.DS_Store``), which the original would have tried to unpickle.
    """
    folder = os.fspath(folder)
    if not os.path.exists(folder):
        raise DataFormatError(folder, "folder does not exist")
    if not os.path.isdir(folder):
        raise DataFormatError(folder, "is not a folder")
    names = sorted(
        n for n in os.listdir(folder)
        if not n.startswith(".") and os.path.isfile(os.path.join(folder, n))
    )
    if not names:
        raise DataFormatError(folder, "folder holds no data files")
    return [os.path.join(folder, n) for n in names]


def _as_labels(path: str, y: object) -> np.ndarray:
    """Validate one file's labels and return them as int64."""
    try:
        y = np.asarray(y)
    except Exception as exc:  # ragged or odd objects
        raise DataFormatError(path, f"labels are not an array ({exc})") from None
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataFormatError(path, f"labels must be one-dimensional, got shape {y.shape}")
    if y.size == 0:
        return y.astype(np.int64)
    if y.dtype.kind in "iu":
        pass
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            bad = y[~np.isfinite(y) | (y != np.round(y))][0]
            raise DataFormatError(path, f"labels must be integers, found {bad!r}")
    else:
        raise DataFormatError(path, f"labels must be integers, got dtype {y.dtype}")
    if y.min() < 0:
        raise DataFormatError(path, f"labels must be non-negative, found {int(y.min())}")
    return y.astype(np.int64)


def _as_pixels(path: str, x: object) -> np.ndarray:
    """Validate one file's images and return them as float32 (n, 3072)."""
    try:
        x = np.asarray(x)
    except Exception as exc:
        raise DataFormatError(path, f"images are not an array ({exc})") from None
    if x.dtype.kind not in "fiu":
        raise DataFormatError(path, f"images must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataFormatError(path, f"images must be (n, {ROW_WIDTH}), got shape {x.shape}")
    width = math.prod(x.shape[1:])
    if width != ROW_WIDTH:
        raise DataFormatError(
            path, f"each row must hold {ROW_WIDTH} values (3x32x32), got {width} (shape {x.shape})"
        )
    x = x.reshape(x.shape[0], ROW_WIDTH)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught below
        out = x.astype(np.float32, copy=False)
    if x.dtype.kind == "f" and not np.all(np.isfinite(out)):
        row = int(np.argwhere(~np.isfinite(out))[0, 0])
        what = "non-finite" if not np.all(np.isfinite(x[row])) else "out-of-float32-range"
        raise DataFormatError(path, f"{what} pixel value in row {row}")
    return out


def load_pickle_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate one ``(x, y)`` pickle; returns float32 (n, 3072), int64 (n,)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataFormatError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise DataFormatError(path, "file is empty")
    try:
        obj = restricted_loads(data)
    except EOFError:
        raise DataFormatError(path, "file is truncated (unexpected end of pickle data)") from None
    except pickle.UnpicklingError as exc:
        raise DataFormatError(path, f"not a valid data pickle: {exc}") from None
    except Exception as exc:  # corrupt streams raise many kinds of errors
        raise DataFormatError(path, f"corrupt pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        got = type(obj).__name__ + (f" of length {len(obj)}" if isinstance(obj, (tuple, list)) else "")
        raise DataFormatError(path, f"expected a pickled tuple (x, y), got {got}")
    x = _as_pixels(path, obj[0])
    y = _as_labels(path, obj[1])
    if len(x) != len(y):
        raise DataFormatError(path, f"{len(x)} images but {len(y)} labels")
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
            corrupt, names a global other than numpy's array machinery, or holds
            badly shaped, non-finite or non-integer data. The message names the file.
    """
    files = list_data_files(path)
    start = time.perf_counter()
    xs, ys = [], []
    for file in files:
        x, y = load_pickle_file(file)
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs) if len(xs) > 1 else xs[0]
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
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

