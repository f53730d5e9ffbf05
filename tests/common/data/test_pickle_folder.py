"""Reading and writing the original "32x32 vector folders" (common.data.pickle_folder).

Covers: round trips, the sorted-file-name order of the original reader, an independent
transcription of that reader, byte streams as Python 2 + numpy 1.x wrote them, Python 3
protocols 0-5, the restricted unpickler (no code execution) and every error path.
"""

from __future__ import annotations

import builtins
import codecs
import os
import pickle
import pickletools
import struct
import subprocess
import warnings

import numpy as np
import pytest

from common.data import (
    ROW_WIDTH,
    DataFormatError,
    DataFormatWarning,
    check_test_labels,
    list_data_files,
    load_pickle_file,
    load_pickle_folder,
    write_pickle_folder,
)
from common.data.safe_pickle import restricted_loads


# ----------------------------------------------------------------------------- helpers


def _data(n: int, seed: int = 0, x_dtype=np.float32, y_dtype=np.int64, label_offset: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 255.0, size=(n, ROW_WIDTH)).astype(x_dtype)
    y = (rng.integers(0, 50, size=n) + label_offset).astype(y_dtype)
    return x, y


def _dump(path, obj, protocol: int = pickle.HIGHEST_PROTOCOL) -> str:
    path = os.fspath(path)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def _original_reader(folder, encoding: str = "bytes"):
    """Direct transcription of the original ``load_data_split_pickle`` (trusted data only)."""
    folder = os.fspath(folder)
    file_names = os.listdir(folder)
    file_names.sort()
    xs, ys = [], []
    for name in file_names:
        with open(os.path.join(folder, name), "rb") as f:
            x, y = pickle.load(f, encoding=encoding)
        xs.append(x)
        ys.append(y)
    return np.vstack(xs), np.hstack(ys)


def _assert_format_error(excinfo, path, *fragments: str):
    """The error names ``path`` and its message holds every fragment (case-insensitive)."""
    err = excinfo.value
    assert isinstance(err, DataFormatError)
    assert isinstance(err, ValueError)
    path = os.fspath(path)
    assert err.path == path
    message = str(err)
    assert message.startswith(path)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)


# ------------------------------------------------------- Python 2 + numpy 1.x byte streams

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's _reconstruct, wherever it lives now


def _py2_repr(data: bytes) -> bytes:
    """``repr`` of a Python 2 ``str``: the argument of a protocol-0 STRING opcode."""
    quote = b'"' if (b"'" in data and b'"' not in data) else b"'"
    out = bytearray(quote)
    for byte in data:
        char = bytes([byte])
        if char in (quote, b"\\"):
            out += b"\\" + char
        elif char == b"\t":
            out += b"\\t"
        elif char == b"\n":
            out += b"\\n"
        elif char == b"\r":
            out += b"\\r"
        elif byte < 0x20 or byte >= 0x7F:
            out += b"\\x%02x" % byte
        else:
            out.append(byte)
    out += quote
    return bytes(out)


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2.7's pickle/cPickle wrote for numpy 1.x arrays.

    * every ``str``/``bytes`` is a py2 ``str``: SHORT_BINSTRING / BINSTRING (binary
      protocols) or a repr-escaped STRING (protocol 0), never ``_codecs.encode``;
    * arrays reduce as numpy 1.x did: ``numpy.core.multiarray._reconstruct(numpy.ndarray,
      (0,), 'b')`` plus the state ``(1, shape, dtype, is_fortran, raw_bytes)``;
    * dtypes reduce to ``numpy.dtype('f4', 0, 1)`` plus their state.
    """

    dispatch = pickle._Pickler.dispatch.copy()
    _GLOBALS = {
        id(_RECONSTRUCT): ("numpy.core.multiarray", "_reconstruct"),
        id(np.ndarray): ("numpy", "ndarray"),
        id(np.dtype): ("numpy", "dtype"),
    }

    def _save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else bytes(obj)
        if self.bin:
            if len(data) < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
            else:
                self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        else:
            self.write(pickle.STRING + _py2_repr(data) + b"\n")
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        module, qualname = self._GLOBALS[id(obj)]  # KeyError: numpy 1.x never wrote it
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode("ascii"))
        self.memoize(obj)

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            state = (1, tuple(int(s) for s in obj.shape), obj.dtype, False,
                     np.ascontiguousarray(obj).tobytes())
            return _RECONSTRUCT, (np.ndarray, (0,), "b"), state
        if isinstance(obj, np.dtype):
            return np.dtype, (obj.str[1:], 0, 1), obj.__reduce__()[2]
        return NotImplemented


def py2_dumps(obj, protocol: int = 2) -> bytes:
    import io

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _opcodes(data: bytes):
    names, globals_ = [], []
    for op, arg, _ in pickletools.genops(data):
        names.append(op.name)
        if op.name == "GLOBAL":
            globals_.append(arg)
    return names, globals_


# Verbatim streams of the layout Python 2.7 cPickle + numpy 1.x wrote for
# np.array([1, 2], dtype=np.int32): protocol 2 and protocol 0 (written independently
# of Py2Pickler above, as a cross-check of it).
PY2_PROTO2_INT32 = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b"
    b"\x87Rq\x03(K\x01K\x02\x85cnumpy\ndtype\nq\x04U\x02i4K\x00K\x01\x87Rq\x05(K\x03U\x01<NNN"
    b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x08\x01\x00\x00\x00\x02\x00\x00\x00tb."
)
PY2_PROTO0_INT32 = (
    b"cnumpy.core.multiarray\n_reconstruct\np0\n(cnumpy\nndarray\np1\n(I0\ntp2\nS'b'\np3\n"
    b"tp4\nRp5\n(I1\n(I2\ntp6\ncnumpy\ndtype\np7\n(S'i4'\np8\nI0\nI1\ntp9\nRp10\n(I3\nS'<'\n"
    b"p11\nNNNI-1\nI-1\nI0\ntp12\nbI00\nS'\\x01\\x00\\x00\\x00\\x02\\x00\\x00\\x00'\np13\n"
    b"tp14\nb."
)


# ------------------------------------------------------------------------ round trips


def test_round_trip_several_files_exact(tmp_path):
    x, y = _data(23)
    files = write_pickle_folder(tmp_path / "split", x, y, rows_per_file=5)
    assert [os.path.basename(f) for f in files] == [f"part_{i:03d}.pkl" for i in range(5)]
    assert list_data_files(tmp_path / "split") == files
    got_x, got_y = load_pickle_folder(tmp_path / "split")
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64
    assert got_x.shape == (23, ROW_WIDTH) and got_y.shape == (23,)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_round_trip_one_file_and_float64_input(tmp_path):
    x, y = _data(7, x_dtype=np.float64, y_dtype=np.int32)
    write_pickle_folder(tmp_path, x, y, rows_per_file=100)
    got_x, got_y = load_pickle_folder(tmp_path)
    # The loader returns float32 (the model's dtype) and int64 labels.
    np.testing.assert_array_equal(got_x, x.astype(np.float32))
    np.testing.assert_array_equal(got_y, y.astype(np.int64))


def test_round_trip_more_than_1000_files_keeps_order(tmp_path):
    # 1001 files need 4 digits; with zero padding the sorted names stay in row order.
    n = 1001
    x = np.zeros((n, ROW_WIDTH), np.float32)
    x[:, 0], x[:, 1] = np.arange(n) % 256, np.arange(n) // 256  # the row index, in pixel range
    y = np.arange(n, dtype=np.int64)
    files = write_pickle_folder(tmp_path, x, y, rows_per_file=1)
    assert os.path.basename(files[0]) == "part_0000.pkl"
    assert os.path.basename(files[-1]) == "part_1000.pkl"
    got_x, got_y = load_pickle_folder(tmp_path)
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_array_equal(got_x, x)


def test_write_refuses_existing_pkl_unless_overwrite(tmp_path):
    x, y = _data(10)
    write_pickle_folder(tmp_path, x, y, rows_per_file=3)  # 4 files
    with pytest.raises(FileExistsError):
        write_pickle_folder(tmp_path, x, y)
    x2, y2 = _data(4, seed=1)
    write_pickle_folder(tmp_path, x2, y2, rows_per_file=3, overwrite=True)  # 2 files
    assert len(list_data_files(tmp_path)) == 2
    got_x, got_y = load_pickle_folder(tmp_path)
    np.testing.assert_array_equal(got_x, x2)
    np.testing.assert_array_equal(got_y, y2)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_write_rejects_bad_shapes(tmp_path):
    x, y = _data(4)
    with pytest.raises(ValueError):
        write_pickle_folder(tmp_path / "a", x[:, :3000], y)
    with pytest.raises(ValueError):
        write_pickle_folder(tmp_path / "b", x, y[:3])
    with pytest.raises(ValueError):
        write_pickle_folder(tmp_path / "c", x, y, rows_per_file=0)


def test_order_is_lexicographic_file_name_order_not_creation_order(tmp_path):
    # Created in this order; each file's labels say which file it is.
    names = ["b.pkl", "a.pkl", "10.pkl", "2.pkl", "B.pkl", "data_batch_1"]
    for i, name in enumerate(names):
        x, y = _data(3 + i, seed=i)
        _dump(tmp_path / name, (x, np.full(len(y), 100 + i, dtype=np.int64)))
    expected_names = sorted(names)  # codepoint order, as os.listdir + list.sort
    assert expected_names == ["10.pkl", "2.pkl", "B.pkl", "a.pkl", "b.pkl", "data_batch_1"]
    assert [os.path.basename(p) for p in list_data_files(tmp_path)] == expected_names
    _, got_y = load_pickle_folder(tmp_path)
    expected_y = np.concatenate(
        [np.full(3 + names.index(n), 100 + names.index(n)) for n in expected_names]
    )
    np.testing.assert_array_equal(got_y, expected_y)


def test_matches_transcription_of_original_reader(tmp_path):
    for i, name in enumerate(["train_3", "train_10", "train_1", "x.pkl"]):
        x, y = _data(5 + 2 * i, seed=10 + i, label_offset=10 * i)
        _dump(tmp_path / name, (x, y), protocol=2)
    ref_x, ref_y = _original_reader(tmp_path, encoding="bytes")
    got_x, got_y = load_pickle_folder(tmp_path)
    np.testing.assert_array_equal(got_x, ref_x)
    np.testing.assert_array_equal(got_y, ref_y)
    assert got_x.dtype == ref_x.dtype == np.float32


def test_matches_original_reader_on_py2_float64_files(tmp_path):
    for i, name in enumerate(["b", "a", "c"]):
        x, y = _data(4 + i, seed=20 + i, x_dtype=np.float64, y_dtype=np.int64)
        (tmp_path / name).write_bytes(py2_dumps((x, y), protocol=2))
    ref_x, ref_y = _original_reader(tmp_path, encoding="latin1")
    got_x, got_y = load_pickle_folder(tmp_path)
    assert ref_x.dtype == np.float64
    np.testing.assert_array_equal(got_x, ref_x.astype(np.float32))
    np.testing.assert_array_equal(got_y, ref_y)


def test_hidden_files_and_subfolders_are_ignored(tmp_path):
    x, y = _data(6)
    write_pickle_folder(tmp_path, x, y, rows_per_file=4)
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1garbage")
    (tmp_path / "._part_000.pkl").write_bytes(b"AppleDouble junk")
    (tmp_path / "subdir").mkdir()
    got_x, got_y = load_pickle_folder(tmp_path)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert all(not os.path.basename(p).startswith(".") for p in list_data_files(tmp_path))


def test_accepts_pathlike_and_str(tmp_path):
    x, y = _data(3)
    write_pickle_folder(str(tmp_path), x, y)
    a = load_pickle_folder(tmp_path)
    b = load_pickle_folder(str(tmp_path))
    np.testing.assert_array_equal(a[0], b[0])
    xf, yf = load_pickle_file(tmp_path / "part_000.pkl")
    np.testing.assert_array_equal(xf, x)
    np.testing.assert_array_equal(yf, y)


# ------------------------------------------------------------- Python 2 / 3 pickles


@pytest.mark.parametrize("protocol", [0, 2])
def test_py2pickler_stream_looks_like_python2(protocol):
    x, y = _data(2, x_dtype=np.float64)
    data = py2_dumps((x, y), protocol=protocol)
    if protocol == 0:
        # pickletools cannot show protocol-0 STRINGs with bytes >= 0x80 (it decodes them
        # as ASCII); the unpickler itself reads them as latin-1. Check one ASCII-only
        # stream with pickletools and the real one by its text.
        data.decode("ascii")  # protocol 0 is plain ASCII
        assert data.count(b"cnumpy.core.multiarray\n_reconstruct\n") == 1
        assert b"\nS'" in data and b"\\x" in data
        assert b"_codecs" not in data and b"\x80" not in data
        data = py2_dumps((np.zeros((2, ROW_WIDTH), x.dtype), y), protocol=protocol)
    names, globals_ = _opcodes(data)
    assert b"_codecs" not in data
    assert "numpy.core.multiarray _reconstruct" in globals_
    assert set(globals_) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    assert not {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINBYTES", "SHORT_BINBYTES",
                "BINBYTES8", "STACK_GLOBAL", "FRAME", "BYTEARRAY8"} & set(names)
    if protocol == 2:
        assert names[0] == "PROTO"
        assert "BINSTRING" in names          # the 2 x 3072 x 8 B of pixel data
        assert "SHORT_BINSTRING" in names    # 'b', 'f8', '<', ...
    else:
        assert "STRING" in names and "PROTO" not in names
        data.decode("ascii")                 # protocol 0 is plain ASCII


def test_py2pickler_agrees_with_verbatim_py2_streams():
    arr = np.array([1, 2], dtype=np.int32)
    for verbatim, protocol in [(PY2_PROTO2_INT32, 2), (PY2_PROTO0_INT32, 0)]:
        assert _opcodes(verbatim)[1] == _opcodes(py2_dumps(arr, protocol))[1]
        for stream in (verbatim, py2_dumps(arr, protocol)):
            got = restricted_loads(stream)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("protocol", [0, 2])
@pytest.mark.parametrize("x_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("y_dtype", [np.int32, np.int64])
def test_python2_pickles_load(tmp_path, protocol, x_dtype, y_dtype):
    parts = [_data(n, seed=n, x_dtype=x_dtype, y_dtype=y_dtype) for n in (3, 1, 4)]
    # The raw pixel bytes hold every byte protocol 0 must escape (quotes, backslash,
    # newline, NUL, 0x80+), so the STRING escaping is exercised.
    raw = b"".join(p[0].tobytes() for p in parts)
    assert all(bytes([b]) in raw for b in b"'\"\\\n\r\t\x00\x80\xff")
    for i, (x, y) in enumerate(parts):
        (tmp_path / f"part_{i}").write_bytes(py2_dumps((x, y), protocol=protocol))
    got_x, got_y = load_pickle_folder(tmp_path)
    np.testing.assert_array_equal(got_x, np.vstack([p[0] for p in parts]).astype(np.float32))
    np.testing.assert_array_equal(got_y, np.hstack([p[1] for p in parts]))
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64


def test_python2_pickle_of_label_list_loads(tmp_path):
    x, _ = _data(3)
    (tmp_path / "f").write_bytes(py2_dumps((x, [4, 0, 7]), protocol=2))
    got_x, got_y = load_pickle_folder(tmp_path)
    np.testing.assert_array_equal(got_y, [4, 0, 7])
    np.testing.assert_array_equal(got_x, x)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_python3_pickles_all_protocols_load(tmp_path, protocol):
    x, y = _data(11, seed=protocol)
    write_pickle_folder(tmp_path, x, y, rows_per_file=4, protocol=protocol)
    got_x, got_y = load_pickle_folder(tmp_path)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_python3_protocol2_uses_codecs_latin1_and_loads(tmp_path):
    x, y = _data(2)
    path = _dump(tmp_path / "f.pkl", (x, y), protocol=2)
    with open(path, "rb") as f:
        assert "_codecs encode" in _opcodes(f.read())[1]
    got_x, got_y = load_pickle_file(path)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


# --------------------------------------------------------------------------- safety


class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: str):
    touch = f"touch '{marker}'"
    return {
        "os.system": _Reduce(os.system, (touch,)),
        "builtins.eval": _Reduce(builtins.eval, (f"open({marker!r}, 'w').close()",)),
        "builtins.exec": _Reduce(builtins.exec, (f"open({marker!r}, 'w').close()",)),
        "subprocess.Popen": _Reduce(subprocess.Popen, (["touch", marker],)),
        "builtins.open": _Reduce(builtins.open, (marker, "w")),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec",
                                  "subprocess.Popen", "builtins.open"])
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, name, protocol):
    marker = tmp_path / "pwned"
    payload = _payloads(str(marker))[name]
    x, y = _data(2)
    folder = tmp_path / "data"
    folder.mkdir()
    _dump(folder / "0_ok.pkl", (x, y))
    bad = _dump(folder / "1_bad.pkl", (payload, y), protocol=protocol)
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(folder)
    _assert_format_error(excinfo, bad, "refusing to load global")
    assert not marker.exists()


def test_payload_marker_detects_execution_with_plain_pickle(tmp_path):
    # Control: the payloads above really run under plain pickle, so the marker check
    # in the refusal tests is meaningful.
    for name in ("os.system", "builtins.eval"):
        marker = tmp_path / f"pwned_{name}"
        pickle.loads(pickle.dumps(_payloads(str(marker))[name], protocol=2))
        assert marker.exists()


@pytest.mark.parametrize("global_", [
    b"os\nsystem", b"posix\nsystem", b"nt\nsystem", b"builtins\neval", b"__builtin__\neval",
    b"subprocess\nPopen", b"numpy.testing._private.utils\nrunstring", b"numpy\nload",
    b"numpy.core.multiarray\n_reconstruct.__globals__", b"pickle\nloads",
])
def test_handwritten_protocol0_global_is_refused(tmp_path, global_):
    marker = tmp_path / "pwned"
    data = b"c" + global_ + b"\n(S'touch " + str(marker).encode() + b"'\ntR."
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "refusing to load global")
    assert not marker.exists()


def test_stack_global_protocol4_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = (b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c" + bytes([len(f"touch {marker}")])
            + f"touch {marker}".encode() + b"\x85R.")
    pickletools.dis(data, out=open(os.devnull, "w"))  # well-formed
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "posix.system")
    assert not marker.exists()


@pytest.mark.parametrize("encoding", ["utf-8", "rot13", "hex", "base64", "utf-16"])
def test_codecs_encode_other_than_latin1_is_refused(tmp_path, encoding):
    x, y = _data(2)
    path = _dump(tmp_path / "f.pkl", (_Reduce(codecs.encode, ("abc", encoding)), y), protocol=2)
    with open(path, "rb") as f:
        assert "_codecs encode" in _opcodes(f.read())[1]
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "_codecs.encode", "not allowed")


def test_persistent_ids_are_refused(tmp_path):
    data = b"\x80\x02X\x03\x00\x00\x00abcQ."  # BINPERSID
    path = tmp_path / "f.pkl"
    path.write_bytes(data)
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "persistent")


def test_error_types_are_exported():
    import common.data

    assert issubclass(common.data.DataFormatError, ValueError)
    assert issubclass(common.data.DataFormatWarning, UserWarning)
    err = DataFormatError("/some/file.pkl", "why")
    assert str(err) == "/some/file.pkl: why"
    assert err.path == "/some/file.pkl" and err.reason == "why"


# ------------------------------------------------------------------------ error paths


def test_missing_folder(tmp_path):
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path / "nope")
    _assert_format_error(excinfo, tmp_path / "nope", "does not exist")


def test_path_is_a_file(tmp_path):
    x, y = _data(2)
    path = _dump(tmp_path / "f.pkl", (x, y))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(path)
    _assert_format_error(excinfo, path, "not a folder")


def test_empty_folder(tmp_path):
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, tmp_path, "no data files")


def test_folder_with_only_hidden_files(tmp_path):
    x, y = _data(2)
    _dump(tmp_path / ".hidden.pkl", (x, y))
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, tmp_path, "no data files")


@pytest.mark.parametrize("target", ["elsewhere/part_001.pkl", "part_001.pkl"])
def test_a_broken_link_is_refused_not_skipped(tmp_path, target):
    """A link to an unmounted disk (or to itself) is no regular file: skipped like a
    subfolder, its rows would be missing from the split without a word."""
    x, y = _data(4)
    write_pickle_folder(tmp_path, x, y, rows_per_file=2)
    link = tmp_path / "part_001.pkl"
    link.unlink()
    link.symlink_to(tmp_path / target)
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, link, "symbolic link whose target is missing")
    (tmp_path / ".hidden.pkl").symlink_to(tmp_path / "gone")  # hidden names stay ignored
    link.unlink()
    assert [os.path.basename(p) for p in list_data_files(tmp_path)] == ["part_000.pkl"]


def test_a_file_too_large_for_memory_is_named(tmp_path, monkeypatch):
    x, y = _data(2)
    path = _dump(tmp_path / "f.pkl", (x, y))

    class NoMemory:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            raise MemoryError()

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: NoMemory() if os.fspath(p) == str(
        path) else real_open(p, *a, **k))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, path, f"{os.path.getsize(path):,} bytes: too large to read")


def test_empty_file(tmp_path):
    x, y = _data(2)
    _dump(tmp_path / "a.pkl", (x, y))
    (tmp_path / "b.pkl").write_bytes(b"")
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, tmp_path / "b.pkl", "empty")


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("fraction", [0.5, 0.01, 0.999])
def test_truncated_file(tmp_path, protocol, fraction):
    x, y = _data(3)
    data = pickle.dumps((x, y), protocol=protocol)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, path, "truncated")


def test_truncated_python2_file(tmp_path):
    x, y = _data(3, x_dtype=np.float64)
    data = py2_dumps((x, y), protocol=2)
    path = tmp_path / "cut"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "truncated")


@pytest.mark.parametrize("content", [
    b"this is not a pickle\n",
    b"\x80\x05garbage",
    bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
])
def test_garbage_bytes(tmp_path, content):
    path = tmp_path / "junk.pkl"
    path.write_bytes(content)
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, path)


@pytest.mark.parametrize("obj, why", [
    ({"x": 1, "y": 2}, "dict"),
    (None, "NoneType"),
    (np.zeros((2, ROW_WIDTH)), "ndarray"),
    ((np.zeros((2, ROW_WIDTH)),), "tuple"),
    ((np.zeros((2, ROW_WIDTH)), np.zeros(2, np.int64), np.zeros(2)), "tuple"),
])
def test_not_an_xy_tuple(tmp_path, obj, why):
    path = _dump(tmp_path / "f.pkl", obj)
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, path, "expected a pickled tuple (x, y)", why)


def test_three_tuple_message_gives_length(tmp_path):
    x, y = _data(2)
    path = _dump(tmp_path / "f.pkl", (x, y, y))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "length 3")


def test_length_mismatch(tmp_path):
    x, y = _data(5)
    path = _dump(tmp_path / "f.pkl", (x, y[:4]))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, path, "5 images but 4 labels")


@pytest.mark.parametrize("shape", [(4, 3000), (4, 3073), (4, 32, 32), (ROW_WIDTH,)])
def test_bad_row_width(tmp_path, shape):
    x = np.zeros(shape, np.float32)
    path = _dump(tmp_path / "f.pkl", (x, np.zeros(shape[0] if len(shape) > 1 else 1, np.int64)))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "3072")
    if shape == (4, 3000):
        _assert_format_error(excinfo, path, "got 3000")


def test_nchw_shaped_arrays_are_refused_with_the_reshape_to_use(tmp_path):
    # Only exactly (n, 3072) is read: any other shape is refused, even one that would
    # flatten correctly, so that no shape is ever guessed.
    x, y = _data(3)
    path = _dump(tmp_path / "f.pkl", (x.reshape(3, 3, 32, 32), y))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "2-D array (n, 3072)", "channel-first", "(3, 3, 32, 32)",
                         "NCHW", "x.reshape(3, 3072)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_pixels(tmp_path, bad, dtype):
    x, y = _data(4, x_dtype=dtype)
    x[2, 100] = bad
    path = _dump(tmp_path / "f.pkl", (x, y))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, path, "non-finite", "row 2")


def test_finite_float64_pixels_beyond_float32_range_are_refused(tmp_path):
    # float64 -> float32 would silently turn this into inf.
    x, y = _data(2, x_dtype=np.float64)
    x[1, 0] = 1e300
    path = _dump(tmp_path / "f.pkl", (x, y))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "out-of-float32-range", "row 1")


def test_negative_labels(tmp_path):
    x, y = _data(3)
    y[1] = -1
    path = _dump(tmp_path / "f.pkl", (x, y))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_folder(tmp_path)
    _assert_format_error(excinfo, path, "non-negative", "-1")


@pytest.mark.parametrize("labels, fragment", [
    (np.array([0.0, 1.5, 2.0]), "1.5"),
    (np.array([0.0, np.nan, 2.0]), "nan"),
    (np.array([0.0, np.inf, 2.0]), "inf"),
    (np.array(["a", "b", "c"]), "dtype"),
    (np.array([b"a", b"b", b"c"]), "dtype"),
    (["0", "1", "2"], "dtype"),
    (np.array([0, 1, 2], dtype=object), "dtype"),
    (np.array([True, False, True]), "dtype"),
    (np.zeros((3, 2), np.int64), "one-dimensional"),
])
def test_bad_labels(tmp_path, labels, fragment):
    x, _ = _data(3)
    path = _dump(tmp_path / "f.pkl", (x, labels))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "labels", fragment)


def test_integer_valued_float_labels_are_accepted_as_int64(tmp_path):
    x, _ = _data(4)
    _dump(tmp_path / "f.pkl", (x, np.array([0.0, 3.0, 1.0, 7.0], dtype=np.float32)))
    _, got_y = load_pickle_folder(tmp_path)
    assert got_y.dtype == np.int64
    np.testing.assert_array_equal(got_y, [0, 3, 1, 7])


def test_column_vector_and_unsigned_labels_are_accepted_as_int64(tmp_path):
    x, _ = _data(3)
    _dump(tmp_path / "a.pkl", (x, np.array([[1], [2], [3]], dtype=np.uint16)))
    _dump(tmp_path / "b.pkl", (x, [4, 5, 6]))
    _, got_y = load_pickle_folder(tmp_path)
    assert got_y.dtype == np.int64
    np.testing.assert_array_equal(got_y, [1, 2, 3, 4, 5, 6])


def test_integer_pixels_are_accepted_as_float32(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (2, ROW_WIDTH), dtype=np.uint8)
    _dump(tmp_path / "f.pkl", (x, np.array([0, 1])))
    got_x, _ = load_pickle_folder(tmp_path)
    assert got_x.dtype == np.float32
    np.testing.assert_array_equal(got_x, x.astype(np.float32))


def test_string_pixels_are_refused(tmp_path):
    path = _dump(tmp_path / "f.pkl", (np.full((2, ROW_WIDTH), "a"), np.array([0, 1])))
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    _assert_format_error(excinfo, path, "numeric")


def test_unreadable_path_is_format_error(tmp_path):
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(tmp_path / "missing.pkl")
    _assert_format_error(excinfo, tmp_path / "missing.pkl", "cannot read")


# ------------------------------------------------------------------ check_test_labels


def test_check_test_labels_warns_with_missing_labels_by_default():
    train_y = np.array([0, 1, 2, 3, 3])
    test_y = np.array([1, 9, 2, 7, 9])
    with pytest.warns(DataFormatWarning) as record:
        missing = check_test_labels(train_y, test_y, test_path="/data/test")
    np.testing.assert_array_equal(missing, [7, 9])
    message = str(record[0].message)
    assert message.startswith("/data/test")
    assert "2 test label(s)" in message and "(7, 9)" in message


def test_check_test_labels_strict_raises():
    with pytest.raises(DataFormatError) as excinfo:
        check_test_labels(np.array([0, 1]), np.array([0, 5]), test_path="/data/test", strict=True)
    _assert_format_error(excinfo, "/data/test", "5")


def test_check_test_labels_all_present_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        missing = check_test_labels(np.array([0, 1, 2, 5]), np.array([5, 0, 0, 2]))
        missing_strict = check_test_labels(np.array([0, 1]), np.array([1]), strict=True)
    assert missing.size == 0 and missing_strict.size == 0


def test_check_test_labels_lists_at_most_ten():
    with pytest.warns(DataFormatWarning, match=r"12 test label\(s\).*\.\.\.") as record:
        missing = check_test_labels(np.array([0]), np.arange(1, 13))
    assert missing.size == 12
    assert "11" not in str(record[0].message)
