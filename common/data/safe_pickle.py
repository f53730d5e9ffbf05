"""A restricted unpickler for the released "32x32 vector folder" pickles.

Plain ``pickle.load`` runs whatever callable a file names, so loading a data set from
the internet with it is arbitrary code execution. The released files only need numpy
arrays (and, for Python-3 protocol-2 files, ``_codecs.encode`` of latin-1 text), so
this unpickler admits exactly those globals and refuses everything else *before* any
of it is called.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from typing import Any, Callable

import numpy as np


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    """The first ``module.name`` that imports (numpy 2 moved numpy.core to numpy._core)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {modules} has {name}")


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to the latin-1 use protocol-2 pickles make of it."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin-1", errors)


_CORE = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")

# (module, name) as written in the file -> a factory returning the object to use.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}
for _module in _CORE:
    _ALLOWED[(_module, "_reconstruct")] = lambda: _numpy_attr(_CORE, "_reconstruct")
    _ALLOWED[(_module, "scalar")] = lambda: _numpy_attr(_CORE, "scalar")
for _module in _NUMERIC:
    _ALLOWED[(_module, "_frombuffer")] = lambda: _numpy_attr(_NUMERIC, "_frombuffer")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals an array needs.

    Python-2 files are read with ``encoding='latin1'``, the encoding numpy documents
    for Python-2 array pickles.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 (pickle API)
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed"
            )
        return factory()

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 (pickle API)
        raise pickle.UnpicklingError("persistent ids are not allowed")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` admitting only numpy arrays (see module docstring)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
