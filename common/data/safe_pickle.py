"""A restricted unpickler for the released "32x32 vector folder" pickles.

Plain ``pickle.load`` runs whatever callable a file names, so loading a data set from
the internet with it is arbitrary code execution. The released files only need numpy
arrays (and, for Python-3 protocol-2 files, ``_codecs.encode`` of latin-1 text), so
this unpickler admits exactly those globals and refuses everything else *before* any
of it is called.

Bounded cost. Even numpy's own array machinery lets a tiny file declare a huge array
(``numpy.ndarray((100000, 100000))`` is a few bytes of pickle and 80 GB of memory,
lazily allocated until the reader touches it). So every object the admitted callables
build is charged, before it is built, against a budget of the file's own size plus
1 MiB (``MEMORY_SLACK``):

* arrays (``ndarray(...)``, ``_reconstruct``, ``ndarray.__setstate__`` via BUILD,
  ``_frombuffer``) and numpy scalars are charged their declared ``size * itemsize``,
  views included (a zero-stride view of 8 bytes can declare gigabytes, and the reader
  copies what it is given), so the total over the whole file is at most its size +
  1 MiB: a genuine array's data is stored in the file, so only hostile files exceed it;
* ``_codecs.encode`` output has a budget of its own of the same size (protocol-2 files
  hold an array's bytes once as text, then once as the array);
* memo reuse (one stored 1 MB string fed to a thousand arrays) is charged every time
  it is used, so it cannot multiply memory;
* dtypes: only plain ones (no structured or subarray dtypes, no metadata), always
  fresh copies; a dtype's BUILD state may only restate what the type string already
  fixed (byte order aside), so a file cannot set a huge item size, object flags on a
  float type, or alter numpy's shared builtin dtypes. A huge item size declared by a
  type string ('S1000000000') is charged with the array that uses it;
* object arrays hold references to objects already built (8 bytes charged per item);
* everything else the unpickler builds (lists, tuples, strings, small integers) costs
  memory linear in the number of opcodes, hence in the file size.

Bounded time. Reading costs time linear in the file size, or the file is refused:

* dicts, sets and frozensets are refused at their opcode, before one is built: the
  layout never holds one, and one of keys with equal hashes (ints that agree modulo
  2**61 - 1, tuples of such, floats 2.0**(61 * k)) costs time quadratic in the file size
  (840 KB took 30 s). SETITEM(S) goes with them: on an array it would fill the whole
  array once per opcode;
* memo keys are limited to 0..2**32 - 1, the range of the binary PUT opcodes, so the
  protocol-0 PUT cannot fill the memo with colliding keys either;
* ``_codecs.encode`` accepts only a short encoding name and the 'strict' error handler
  (a megabyte name, stored once and reused, would be normalised again on every call);
* messages describe hostile values with a bounded ``_short``: ``repr`` of a list that
  holds another list 65 times, which holds another 65 times, ..., grows exponentially
  with the depth (a 503-byte file took 1.8 s, one of 639 bytes 81 s);
* array dimensions are at most 2**63 - 1, so shape arithmetic stays on small integers,
  and decimal integers are parsed under Python's limit of 4300 digits.

BUILD can only be checked before numpy's ``__setstate__`` runs in the pure-Python
unpickler (``pickle._Unpickler``, the same route joblib takes); its speed is fine for
data files, which hold a few large strings rather than many small objects.
"""

from __future__ import annotations

import codecs
import importlib
import math
import numbers
import pickle
from typing import Any, Callable, ClassVar

import numpy as np

MEMORY_SLACK = 1 << 20  # bytes allowed beyond the file size (headers, small objects)
MAX_DIMS = 64           # numpy's own limit on array dimensions
MAX_DIM = 2 ** 63 - 1   # numpy's own limit on one dimension (intp)
MAX_MEMO_KEY = 2 ** 32 - 1  # the largest key LONG_BINPUT can write
_MAX_ENCODING_NAME = 32  # 'latin1', 'latin-1', 'iso-8859-1', ...
_SHOWN_ITEMS = 8        # items of a tuple or list a message shows
_MAX_DTYPE_TEXT = 64    # longest type string accepted ('<f8', 'U1', ...)


def _numpy_attr(modules: tuple[str, ...], name: str) -> Any:
    """The first ``module.name`` that imports (numpy 2 moved numpy.core to numpy._core)."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {modules} has {name}")


_CORE = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
_RECONSTRUCT = _numpy_attr(_CORE, "_reconstruct")
_SCALAR = _numpy_attr(_CORE, "scalar")
_FROMBUFFER = _numpy_attr(_NUMERIC, "_frombuffer")


def cut(text: str, limit: int = 80) -> str:
    """``text`` at most ``limit`` characters long (a message's part that a file decides)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value: Any, depth: int = 2) -> str:
    """A description for messages, bounded in length and in the time it takes.

    ``repr`` is neither: a hostile value may be huge, or a list sharing one stored list
    many times over at every level (exponential in the depth, linear in the file).
    """
    if isinstance(value, (tuple, list)):
        if depth == 0 or len(value) > _SHOWN_ITEMS:
            return f"a {type(value).__name__} of {len(value)} items"
        inner = ", ".join(_short(item, depth - 1) for item in value)
        text = f"[{inner}]" if isinstance(value, list) else f"({inner}{',' * (len(value) == 1)})"
    elif isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    elif isinstance(value, (str, bytes)):
        text = repr(value[:80])
    elif value is None or isinstance(value, (int, float, np.dtype, np.number, np.bool_)):
        text = repr(value)
    else:
        return f"a {type(value).__name__}"
    return cut(text)


class _Budget:
    """Bytes one load may still build of one kind; charged before anything is allocated."""

    def __init__(self, what: str, file_size: int):
        self.what = what
        self.file_size = file_size
        self.limit = file_size + MEMORY_SLACK
        self.used = 0

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` more; refuse once the total passes the file size + slack."""
        self.used += nbytes
        if self.used > self.limit:
            total = f" ({self.used} bytes in all)" if self.used != nbytes else ""
            raise pickle.UnpicklingError(
                f"{self.what} of {nbytes} bytes declared in a file of {self.file_size} bytes"
                f"{total}: a file may build at most its size + 1 MiB ({self.limit} bytes) "
                "of them, since their data is stored in it")


def _shape(value: Any) -> tuple[int, ...]:
    """A validated array shape: at most 64 non-negative integers."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise pickle.UnpicklingError(
            f"array shape must be a tuple of at most {MAX_DIMS} integers, got {_short(value)}")
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, (numbers.Integral, np.integer)) \
                or not 0 <= int(dim) <= MAX_DIM:
            raise pickle.UnpicklingError(
                f"array shape {_short(value)} is not integers 0..{MAX_DIM}")
    return tuple(int(dim) for dim in value)


def _check_plain(dtype: np.dtype) -> np.dtype:
    """Refuse structured and subarray dtypes (a data file never needs them)."""
    if dtype.fields is not None or dtype.subdtype is not None or dtype.metadata:
        raise pickle.UnpicklingError(
            f"dtype {_short(dtype)} is not allowed: only plain dtypes (numbers, text, object)")
    return dtype


def _plain_dtype(value: Any) -> np.dtype:
    """A plain dtype from a dtype object or a short type string (py2 streams pass 'b')."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str) and len(value) <= _MAX_DTYPE_TEXT:
        try:
            value = np.dtype(value)
        except TypeError:
            raise pickle.UnpicklingError(f"unknown dtype {_short(value)}") from None
    if not isinstance(value, np.dtype):
        raise pickle.UnpicklingError(f"expected a dtype, got {type(value).__name__}")
    return _check_plain(value)


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Declared data size in exact integers (no overflow)."""
    return math.prod(shape) * dtype.itemsize


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to the latin-1 use protocol-2 pickles make of it.

    The name is looked up only when short: ``codecs.lookup`` normalises it on every call.
    """
    if not isinstance(encoding, str) or len(encoding) > _MAX_ENCODING_NAME \
            or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(
            f"_codecs.encode with encoding {_short(encoding)} is not allowed")
    if not isinstance(errors, str) or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode with errors={_short(errors)} is not allowed")
    return codecs.encode(text, "latin-1")


class _ArrayClass:
    """Stands for ``numpy.ndarray`` in the stream.

    Calling it (REDUCE, OBJ, INST) builds a charged array; ``_reconstruct`` accepts it
    as its subtype. Not being a type, it cannot be used by NEWOBJ (``cls.__new__``),
    which would bypass the charge.
    """

    def __init__(self, arrays: _Budget):
        self._arrays = arrays

    def __call__(self, shape: Any, dtype: Any = None, buffer: Any = None, offset: int = 0,
                 strides: Any = None, order: Any = None) -> np.ndarray:
        shape = _shape(shape)
        dtype = _plain_dtype("f8" if dtype is None else dtype)
        if buffer is not None and not isinstance(buffer, (bytes, bytearray)):
            raise pickle.UnpicklingError(
                f"numpy.ndarray buffer must be bytes, got {type(buffer).__name__}")
        self._arrays.charge(_nbytes(shape, dtype))
        return np.ndarray(shape, dtype, buffer, offset, strides, order)


# Opcodes that build or fill a dict, set or frozenset: refused (module docstring).
_HASHED_OPCODES = {getattr(pickle, name): name for name in (
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET")}


def _refuse_hashed(opcode: str) -> Callable[[Any], None]:
    """A dispatch entry refusing ``opcode`` before it builds or fills anything."""
    def refuse(unpickler: Any) -> None:
        raise pickle.UnpicklingError(
            f"a dict, set or frozenset is not allowed (pickle opcode {opcode}): expected a "
            "pickled tuple (x, y) of numpy arrays, which holds none, and a hostile one costs "
            "time quadratic in the file size")
    return refuse


class RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 (BUILD needs the Python unpickler)
    """Unpickler that resolves only the numpy globals an array needs, at bounded cost.

    Python-2 files are read with ``encoding='latin1'``, the encoding numpy documents
    for Python-2 array pickles. ``file_size`` sets the memory budget (module docstring).
    """

    # The pure-Python unpickler's state that these opcodes use (not in typeshed), and its
    # dispatch table, copied and extended: opcode -> function of the unpickler.
    stack: list[Any]
    memo: dict[int, Any]
    readline: Callable[[], bytes]
    dispatch: ClassVar[dict[int, Callable[..., None]]] = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def __init__(self, file: Any, file_size: int, **kwargs: Any):
        super().__init__(file, **kwargs)
        self._arrays = _Budget("array", file_size)
        self._text = _Budget("_codecs.encode output", file_size)
        self._array_class = _ArrayClass(self._arrays)
        self._allowed = self._admitted_globals()

    def _admitted_globals(self) -> dict[tuple[str, str], Callable[..., Any]]:
        """(module, name) as written in the file -> the checked stand-in to use."""
        allowed: dict[tuple[str, str], Callable[..., Any]] = {
            ("numpy", "ndarray"): self._array_class,
            ("numpy", "dtype"): self._dtype,
            ("_codecs", "encode"): self._encode,
        }
        for module in _CORE:
            allowed[(module, "_reconstruct")] = self._reconstruct
            allowed[(module, "scalar")] = self._scalar
        for module in _NUMERIC:
            allowed[(module, "_frombuffer")] = self._frombuffer
        return allowed

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 (pickle API)
        found = self._allowed.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(  # the name is the file's, of any length
                f"refusing to load global {cut(f'{module}.{name}')}: only numpy arrays are "
                "allowed")
        return found

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 (pickle API)
        raise pickle.UnpicklingError("persistent ids are not allowed")

    # ---- the admitted callables, each charged before it allocates

    def _dtype(self, obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
        """``numpy.dtype(type_string)``, always a fresh copy (BUILD may then set its byte order)."""
        if not isinstance(obj, (str, bytes)):
            raise pickle.UnpicklingError(f"numpy.dtype takes a type string here, got {_short(obj)}")
        return _check_plain(np.dtype(_plain_dtype(obj), align=bool(align), copy=True))

    def _encode(self, text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        if not isinstance(text, str):
            raise pickle.UnpicklingError("_codecs.encode takes text")
        self._text.charge(len(text))  # latin-1: one byte per character
        return _latin1_encode(text, encoding, errors)

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not self._array_class:
            raise pickle.UnpicklingError("_reconstruct may only build numpy.ndarray")
        shape, dtype = _shape(shape), _plain_dtype(dtype)
        self._arrays.charge(_nbytes(shape, dtype))
        return _RECONSTRUCT(np.ndarray, shape, dtype)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
        if not isinstance(buf, (bytes, bytearray)):
            raise pickle.UnpicklingError(f"_frombuffer needs bytes, got {type(buf).__name__}")
        shape, dtype = _shape(shape), _plain_dtype(dtype)
        self._arrays.charge(_nbytes(shape, dtype))
        return _FROMBUFFER(buf, dtype, shape, order)

    def _scalar(self, dtype: Any, *args: Any) -> Any:
        dtype = _plain_dtype(dtype)
        self._arrays.charge(dtype.itemsize)
        return _SCALAR(dtype, *args)

    # ---- BUILD: numpy's __setstate__ runs only on checked states

    def _load_build(self) -> None:
        """BUILD on an array or dtype after checking its state; any other BUILD is refused."""
        state, inst = self.stack[-1], self.stack[-2]
        if type(inst) is np.ndarray:
            self._check_array_state(state)
        elif isinstance(inst, np.dtype):
            self._check_dtype_state(inst, state)
        else:
            raise pickle.UnpicklingError(f"BUILD on {type(inst).__name__} is not allowed")
        self.stack.pop()
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = _load_build

    def _refuse_newobj(self) -> None:
        """NEWOBJ calls ``cls.__new__`` directly, around the checked stand-ins: never needed."""
        raise pickle.UnpicklingError("NEWOBJ is not allowed: data pickles build arrays by REDUCE")

    dispatch[pickle.NEWOBJ[0]] = _refuse_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _refuse_newobj

    dispatch.update({code[0]: _refuse_hashed(name) for code, name in _HASHED_OPCODES.items()})

    def _load_put(self) -> None:
        """Protocol 0's PUT, its key limited to the binary opcodes' range (module docstring)."""
        line = self.readline()[:-1]
        if not line.isdigit() or len(line) > len(str(MAX_MEMO_KEY)) or int(line) > MAX_MEMO_KEY:
            raise pickle.UnpicklingError(
                f"memo key {_short(line)} is not allowed: keys are 0..{MAX_MEMO_KEY}")
        self.memo[int(line)] = self.stack[-1]

    dispatch[pickle.PUT[0]] = _load_put

    def _check_array_state(self, state: Any) -> None:
        """``(version, shape, dtype, is_fortran, data)`` or its 4-item form; charge its size."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("numpy array state must be a 4- or 5-tuple")
        shape, dtype = _shape(state[-4]), state[-3]
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError("numpy array state must hold a dtype")
        self._arrays.charge(_nbytes(shape, _check_plain(dtype)))
        data = state[-1]
        expected = list if dtype.hasobject else (bytes, bytearray, str)
        if not isinstance(data, expected):
            raise pickle.UnpicklingError(
                f"numpy array state holds {type(data).__name__} data for dtype {dtype}")

    @staticmethod
    def _check_dtype_state(inst: np.dtype, state: Any) -> None:
        """Accept only a byte order change: the rest must restate the type string's own values."""
        ok = (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
              and state[1] in ("<", ">", "|", "=") and state[2:5] == (None, None, None)
              and state[5] in (-1, inst.itemsize) and state[6] in (-1, inst.alignment)
              and state[7] == inst.flags and (len(state) == 8 or state[8] is None))
        if not ok:
            raise pickle.UnpicklingError(
                f"dtype state {_short(state)} is not allowed for {inst}: only plain dtypes")


class _StrictReader:
    """File-like view of the bytes that raises EOFError on a short read.

    The pure-Python unpickler does not notice a string cut short by truncation; the
    C one does. This keeps "truncated" the one error a truncated file gives.
    """

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:  # noqa: D102 (file API)
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos:end]
        if n >= 0 and len(chunk) < n:
            raise EOFError("pickle data was truncated")
        self._pos += len(chunk)
        return chunk

    def readline(self) -> bytes:  # noqa: D102 (file API)
        end = self._data.find(b"\n", self._pos)
        if end < 0:
            raise EOFError("pickle data was truncated")
        line = self._data[self._pos:end + 1]
        self._pos = end + 1
        return line


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` admitting only numpy arrays, at memory bounded by its size.

    Raises:
        pickle.UnpicklingError: a global other than numpy's array machinery, or
            objects declared larger than the file (see the module docstring).
        EOFError: the data is truncated.
    """
    data = bytes(data)
    return RestrictedUnpickler(_StrictReader(data), len(data), encoding="latin1").load()
