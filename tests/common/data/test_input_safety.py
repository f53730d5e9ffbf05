"""No silent wrong result, one clear error for every bad data input.

The data reader refuses what it would misread (NHWC arrays, pixels in another scale,
sparse labels, constant splits), keeps constant images but logs their count, and reads
hostile pickles at bounded time and memory. Each refusal is a ``DataFormatError`` whose
message starts with the offending file or folder and says why.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import pickletools
import struct
import subprocess
import sys

import numpy as np
import pytest

from checkout import ROOT
from common.data import ROW_WIDTH, DataFormatError, load_pickle_file, load_pickle_folder
from common.data import write_pickle_folder
from common.data.pickle_folder import PIXEL_RANGE
from common.data.safe_pickle import MEMORY_SLACK, restricted_loads
from common.training.data import MAX_CLASSES, class_count_from_labels, load_split_data


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 255.0, (n, ROW_WIDTH)).astype(np.float32)


def _dump(path, obj) -> str:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return os.fspath(path)


def _refused(path, *fragments: str, call=load_pickle_file) -> str:
    """Load ``path``, expect a DataFormatError naming it; return the message."""
    with pytest.raises(DataFormatError) as excinfo:
        call(path)
    message = str(excinfo.value)
    assert excinfo.value.path == os.fspath(path)
    assert message.startswith(os.fspath(path) + ": ")
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ------------------------------------------------------------------------- layout


def test_reader_refuses_nhwc_shaped_arrays(tmp_path):
    rows = _pixels(3)
    nhwc = rows.reshape(3, 3, 32, 32).transpose(0, 2, 3, 1)  # the same images, NHWC
    path = _dump(tmp_path / "f.pkl", (np.ascontiguousarray(nhwc), np.arange(3)))
    _refused(path, "2-D array (n, 3072)", "3x32x32", "channel-first", "flattened",
             "got shape (3, 32, 32, 3)", "looks like NHWC images",
             "x.transpose(0, 3, 1, 2).reshape(3, 3072)")
    # The hint is right: following it gives back the rows.
    fixed = nhwc.transpose(0, 3, 1, 2).reshape(3, ROW_WIDTH)
    _dump(path, (fixed, np.arange(3)))
    np.testing.assert_array_equal(load_pickle_file(path)[0], rows)


@pytest.mark.parametrize("shape", [(2, ROW_WIDTH, 1), (2, 1024, 3), (2, 96, 32), (1, 2, ROW_WIDTH)])
def test_reader_refuses_every_x_that_is_not_n_by_3072(tmp_path, shape):
    path = _dump(tmp_path / "f.pkl", (np.zeros(shape, np.float32), np.arange(shape[0])))
    _refused(path, "2-D array (n, 3072)", f"got shape {shape}")


def test_reader_refuses_lists_of_rows(tmp_path):
    # A list of references to one stored row would be materialised n times over.
    row = _pixels(1)[0]
    path = _dump(tmp_path / "f.pkl", ([row] * 4, np.arange(4)))
    _refused(path, "images must be a numpy array (n, 3072), got list")


# ------------------------------------------------------------------------ pixel range


def test_pixels_within_one_of_0_255_are_read(tmp_path):
    """The accepted range's edges (resampling may overshoot 0..255 by up to one level)."""
    low, high = PIXEL_RANGE
    x = _pixels(4).astype(np.float32)
    x[1, 5], x[2, 17] = low, high
    images, labels = load_pickle_file(_dump(tmp_path / "f.pkl", (x, np.arange(4))))
    assert images.shape == (4, ROW_WIDTH) and images.min() == low and images.max() == high
    np.testing.assert_array_equal(labels, np.arange(4))


@pytest.mark.parametrize("value, dtype, shown", [
    (300.0, np.float32, "300"), (-5.0, np.float64, "-5"), (256.5, np.float32, "256.5"),
    (-1.25, np.float32, "-1.25"), (1e6, np.float64, "1e+06"), (-7, np.int16, "-7"),
    (4000, np.int32, "4000"),
])
def test_reader_refuses_pixels_far_outside_0_255(tmp_path, value, dtype, shown):
    x = _pixels(4).astype(dtype)
    x[2, 17] = value
    path = _dump(tmp_path / "f.pkl", (x, np.arange(4)))
    _refused(path, f"pixel value {shown} in row 2", "accepted range -1..256", "rescale")


def test_reader_refuses_pixels_in_another_scale(tmp_path):
    # e.g. data mapped to -1..1 and multiplied back by the wrong factor (-300..300).
    x = (_pixels(3) / 255.0 * 2.0 - 1.0) * 300.0
    path = _dump(tmp_path / "f.pkl", (x, np.arange(3)))
    _refused(path, "outside the accepted range")


def test_reader_accepts_resampling_overshoot_within_the_tolerance(tmp_path):
    x = _pixels(3)
    x[0, :4] = [-1.0, -0.4, 255.3, 256.0]
    x[1] = np.clip(x[1], 0, 255).round()   # integral pixels as well
    path = _dump(tmp_path / "f.pkl", (x, np.arange(3)))
    got, _ = load_pickle_file(path)
    np.testing.assert_array_equal(got, x)


def test_synthetic_and_real_data_lie_in_the_accepted_range(tmp_path):
    from common.synthetic import write_synthetic_dataset

    write_synthetic_dataset(str(tmp_path), num_identities=3, train_per_identity=2,
                            test_per_identity=1, seed=0)
    x, _ = load_pickle_folder(tmp_path / "train")
    assert x.min() >= 0 and x.max() <= 255
    lfw = os.path.join(ROOT, "..", "shared", "data", "lfw_deepfunneled_32", "test")
    if os.path.isdir(lfw):
        x, _ = load_pickle_folder(lfw)
        assert x.min() >= 0 and x.max() <= 255


# ---------------------------------------------------------------------- constant images


@pytest.fixture
def absl_warnings(caplog):
    """absl logging records at WARNING and above, as (message) strings."""
    caplog.set_level(logging.WARNING, logger="absl")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_constant_images_are_kept_and_counted_in_one_warning(tmp_path, absl_warnings):
    x = _pixels(10)
    x[1] = 0.0       # black frames
    x[6] = 0.0
    x[8] = 255.0     # a white one
    y = np.arange(10) % 3
    write_pickle_folder(tmp_path, x, y, rows_per_file=4)   # 3 files
    got_x, got_y = load_pickle_folder(tmp_path)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    messages = [m for m in absl_warnings() if "constant" in m]
    assert messages == [f"{tmp_path}: 3 of 10 images are constant (every pixel equal, e.g. black "
                        "frames); kept as data"]


def test_no_warning_without_constant_images(tmp_path, absl_warnings):
    write_pickle_folder(tmp_path, _pixels(5), np.arange(5))
    load_pickle_folder(tmp_path)
    assert not [m for m in absl_warnings() if "constant" in m]


def test_single_file_reader_also_reports_constant_images(tmp_path, absl_warnings):
    x = _pixels(3)
    x[0] = 12.0
    path = _dump(tmp_path / "f.pkl", (x, np.arange(3)))
    load_pickle_file(path)
    assert [m for m in absl_warnings() if "constant" in m] == [
        f"{path}: 1 of 3 images are constant (every pixel equal, e.g. black frames); kept as data"]


def _write_split(folder, x, labels):
    write_pickle_folder(folder, x, np.asarray(labels, np.int64))
    return str(folder)


def test_constant_split_is_refused_naming_its_folder(tmp_path):
    train = _write_split(tmp_path / "train", np.zeros((6, ROW_WIDTH), np.float32), [0, 1, 2] * 2)
    test = _write_split(tmp_path / "test", _pixels(2), [0, 1])
    with pytest.raises(DataFormatError) as excinfo:
        load_split_data("folder", train_dir=train, test_dir=test)
    message = str(excinfo.value)
    assert message.startswith(os.path.abspath(train) + ": ")
    assert "all 18432 pixel values of the split equal 0" in message
    assert "standard deviation 0" in message


def test_constant_test_split_is_refused_too(tmp_path):
    train = _write_split(tmp_path / "train", _pixels(6), [0, 1, 2] * 2)
    test = _write_split(tmp_path / "test", np.full((2, ROW_WIDTH), 40.0, np.float32), [0, 1])
    with pytest.raises(DataFormatError, match=r"test: all 6144 pixel values of the split equal 40"):
        load_split_data("folder", train_dir=train, test_dir=test)


# ------------------------------------------------------------------------ sparse labels


def test_sparse_labels_are_refused_naming_the_folder(tmp_path):
    # (a label above MAX_LABEL, 999999, is refused by the reader already: see
    # test_labels_must_be_exact_integers_in_range)
    train = _write_split(tmp_path / "train", _pixels(4), [0, 999999, 0, 999999])
    test = _write_split(tmp_path / "test", _pixels(2, seed=1), [0, 999999])
    with pytest.raises(DataFormatError) as excinfo:
        load_split_data("folder", train_dir=train, test_dir=test)
    message = str(excinfo.value)
    assert message.startswith(os.path.abspath(train) + ": labels are too sparse")
    assert "2 distinct labels" in message and "1000000 classes" in message
    assert "relabel the identities to 0..1" in message


@pytest.mark.parametrize("labels, classes", [
    (np.arange(530), 530),                                   # FaceScrub
    (np.arange(1595), 1595),                                 # YouTube Faces
    (np.arange(311), 311),                                   # LFW 32x32
    (np.arange(0, 1060, 2), 1059),                           # every other identity
    (np.array([0, 3, 105]), 106),                            # small sets: 2 * 3 + 100
    (np.arange(600_000), 600_000),                           # dense and large
])
@pytest.mark.slow
def test_dense_or_moderately_gapped_labels_are_accepted(labels, classes):
    assert class_count_from_labels(labels, "/data/train") == classes


@pytest.mark.parametrize("labels, classes", [
    (np.array([0, 3, 106]), 107),                            # 2 * 3 + 100 = 106 < 107
    (np.arange(0, 3000, 3), 2998),                           # 1000 labels, 2998 > 2100
    (np.append(np.arange(600_000), MAX_CLASSES), MAX_CLASSES + 1),  # the hard cap
])
@pytest.mark.slow
def test_sparse_label_rule(labels, classes):
    with pytest.raises(DataFormatError) as excinfo:
        class_count_from_labels(labels, "/data/train")
    message = str(excinfo.value)
    assert message.startswith("/data/train: labels are too sparse")
    assert f"{np.unique(labels).size} distinct labels" in message
    assert f"{classes} classes" in message


def test_test_split_labels_subset_of_train_are_accepted(tmp_path):
    train = _write_split(tmp_path / "train", _pixels(8), [0, 1, 2, 3, 4, 5, 6, 7])
    test = _write_split(tmp_path / "test", _pixels(3, seed=1), [1, 5, 7])
    data = load_split_data("folder", train_dir=train, test_dir=test)
    assert data.num_classes == 8


# --------------------------------------------------------------- hostile pickles, by hand
#
# Streams are written opcode by opcode (pickletools checks that each is well formed), so
# each builds exactly the object described, with nothing pickle.dumps would add.

_ND = b"cnumpy\nndarray\n"
_RECON = b"cnumpy.core.multiarray\n_reconstruct\n"
_DTYPE = b"cnumpy\ndtype\n"
_ENCODE = b"c_codecs\nencode\n"
_SCALAR = b"cnumpy.core.multiarray\nscalar\n"


def _int(v: int) -> bytes:
    if 0 <= v < 2 ** 31:
        return pickle.BININT + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def _text(s: str) -> bytes:
    raw = s.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _bytes(b: bytes) -> bytes:
    return pickle.BINBYTES + struct.pack("<I", len(b)) + b


def _tuple(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _call(func: bytes, *args: bytes) -> bytes:
    return func + _tuple(*args) + pickle.REDUCE


def _dtype(code: str) -> bytes:
    return _call(_DTYPE, _text(code), pickle.NEWFALSE, pickle.NEWTRUE)


def _empty_array() -> bytes:
    return _call(_RECON, _ND, _tuple(_int(0)), _bytes(b"b"))


def _array_state(shape: tuple[int, ...], code: str, data: bytes) -> bytes:
    return _tuple(_int(1), _tuple(*map(_int, shape)), _dtype(code), pickle.NEWFALSE, data)


def _file(x: bytes, y: bytes = pickle.EMPTY_LIST) -> bytes:
    """A protocol-3 stream of the tuple (x, y)."""
    data = pickle.PROTO + b"\x03" + x + y + pickle.TUPLE2 + pickle.STOP
    pickletools.dis(data, out=open(os.devnull, "w"))  # well formed
    return data


def _shared_bytes_list(item, copies: int, size: int = 1 << 19) -> bytes:
    """A list holding ``copies`` objects all built from ONE stored ``size``-byte string."""
    stored = _bytes(b"\x01" * size) + pickle.LONG_BINPUT + struct.pack("<I", 9999)
    again = pickle.LONG_BINGET + struct.pack("<I", 9999)
    parts = [item(stored if i == 0 else again, size) for i in range(copies)]
    return pickle.EMPTY_LIST + pickle.MARK + b"".join(parts) + pickle.APPENDS


def _shared_text_list(copies: int, size: int = 1 << 19) -> bytes:
    stored = _text("a" * size) + pickle.LONG_BINPUT + struct.pack("<I", 9999)
    again = pickle.LONG_BINGET + struct.pack("<I", 9999)
    parts = [_call(_ENCODE, stored if i == 0 else again, _text("latin1")) for i in range(copies)]
    return pickle.EMPTY_LIST + pickle.MARK + b"".join(parts) + pickle.APPENDS


HOSTILE = {
    # numpy.ndarray((100000, 100000)): 80 GB of float64 from a few dozen bytes.
    "ndarray_reduce": _file(_call(_ND, _tuple(_int(100000), _int(100000)))),
    # _reconstruct(ndarray, (10**10,), 'b'): 10 GB.
    "reconstruct": _file(_call(_RECON, _ND, _tuple(_int(10 ** 10)), _bytes(b"b"))),
    # BUILD of an empty array with the state of a (100000, 100000) float64 array.
    "build_state": _file(_empty_array() + _array_state((100000, 100000), "f8", _bytes(b""))
                         + pickle.BUILD),
    # An item size of 1 GB declared by the type string: 10 such items.
    "huge_itemsize": _file(_call(_ND, _tuple(_int(10)), _dtype("S1000000000"))),
    # An 8-byte buffer viewed with stride 0 as 10**9 float64 (numpy accepts it).
    "zero_stride_view": _file(_call(_ND, _tuple(_int(10 ** 9)), _dtype("f8"),
                                    _bytes(b"\x00" * 8), _int(0), _tuple(_int(0)))),
    # One stored 512 KiB string made into 16 arrays via the memo: 8 MiB of arrays.
    "memo_reuse_arrays": _file(_shared_bytes_list(
        lambda data, size: _empty_array() + _array_state((size,), "u1", data) + pickle.BUILD, 16)),
    # The same string as 16 numpy scalars of a 512 KiB item size.
    "memo_reuse_scalars": _file(_shared_bytes_list(
        lambda data, size: _call(_SCALAR, _dtype(f"S{size}"), data), 16)),
    # One stored 512 Ki-character text encoded 16 times.
    "memo_reuse_encode": _file(_shared_text_list(16)),
    # An object array of a million references to one small integer (8 MB of pointers).
    "object_array": _file(_empty_array() + _array_state(
        (10 ** 6,), "O8", pickle.EMPTY_LIST + pickle.MARK + _int(7) + pickle.BINPUT + b"\x05"
        + (pickle.BINGET + b"\x05") * (10 ** 6 - 1) + pickle.APPENDS) + pickle.BUILD),
    # A void dtype whose BUILD state claims a 1 GB item size, used for 10 items.
    "dtype_state_huge_elsize": _file(_call(_ND, _tuple(_int(10)), _DTYPE + _tuple(
        _text("V8"), pickle.NEWFALSE, pickle.NEWTRUE) + pickle.REDUCE + _tuple(
        _int(3), _text("|"), pickle.NONE, pickle.NONE, pickle.NONE, _int(10 ** 9), _int(1),
        _int(0)) + pickle.BUILD)),
    # NEWOBJ would call ndarray.__new__ directly, around any check on calls.
    "newobj": _file(_ND + _tuple(_tuple(_int(100000), _int(100000))) + pickle.NEWOBJ),
    # Moderate: 491 MB declared, small enough that an unbounded reader allocates and
    # touches it (astype float64 -> float32) without failing.
    "moderate_ndarray": _file(_call(_ND, _tuple(_int(20000), _int(ROW_WIDTH)))),
}
# What each refusal says (beyond the file name).
REASONS = {
    "ndarray_reduce": "array of 80000000000 bytes declared in a file of",
    "reconstruct": "array of 10000000000 bytes declared in a file of",
    "build_state": "array of 80000000000 bytes declared in a file of",
    "huge_itemsize": "array of 10000000000 bytes declared in a file of",
    "zero_stride_view": "array of 8000000000 bytes declared in a file of",
    "memo_reuse_arrays": "bytes in all",
    "memo_reuse_scalars": "bytes in all",
    "memo_reuse_encode": "_codecs.encode output of 524288 bytes declared in a file of",
    "object_array": "array of 8000000 bytes declared in a file of",
    "dtype_state_huge_elsize": "dtype state",
    "newobj": "NEWOBJ is not allowed",
    "moderate_ndarray": "array of 491520000 bytes declared in a file of",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickle_is_refused_with_the_reason(tmp_path, name):
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(HOSTILE[name])
    message = _refused(path, REASONS[name])
    if "declared in a file of" in REASONS[name]:
        assert f"declared in a file of {len(HOSTILE[name])} bytes" in message
        assert "at most its size + 1 MiB" in message


def test_label_list_of_shared_arrays_is_refused(tmp_path):
    # y = [row] * 1000 would be materialised 1000 times by np.asarray.
    path = _dump(tmp_path / "f.pkl", (_pixels(2), [np.zeros(ROW_WIDTH)] * 1000))
    _refused(path, "labels must be one-dimensional integers, found a ndarray in the label list")


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_genuine_files_fit_the_budget_at_every_protocol(protocol):
    # Array data of 2 MiB (twice the slack): only the file's own bytes pay for it.
    x = np.random.default_rng(0).integers(0, 256, (700, ROW_WIDTH)).astype(np.uint8)
    assert x.nbytes > 2 * MEMORY_SLACK
    data = pickle.dumps((x, np.arange(700)), protocol=protocol)
    assert x.nbytes <= len(data)
    got_x, got_y = restricted_loads(data)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, np.arange(700))


_MEASURE = r"""
import json, os, resource, sys
import numpy as np
from common.data import DataFormatError, load_pickle_file

def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

limit = vm_bytes() + (256 << 20)         # 256 MiB beyond what the process already maps
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
messages = {}
for path in sys.argv[1:]:
    try:
        load_pickle_file(path)
        messages[path] = "LOADED"
    except DataFormatError as exc:
        messages[path] = str(exc)
print(json.dumps({"messages": messages}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_hostile_pickle_costs_bounded_memory(tmp_path):
    """Every hostile file, read in a process capped at 256 MiB more address space, is
    refused by the bound, not by a MemoryError: a reader that allocated what a file
    declares (491 MB for one of them) would hit the cap. (The cap is the kernel's, the
    same on every machine; a resident-size figure would depend on the allocator.)"""
    paths = []
    for name, data in HOSTILE.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(data)
        paths.append(str(path))
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _MEASURE, *paths], env=env, timeout=300,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for path in paths:
        name = os.path.basename(path)[:-len(".pkl")]
        message = result["messages"][path]
        assert message.startswith(path + ": "), message
        assert REASONS[name] in message, (name, message)
        assert "MemoryError" not in message


# ------------------------------------------------------- messages bounded in length
def _long_global() -> bytes:
    """A global whose module name is 100,000 characters: refused, by name."""
    return pickle.PROTO + b"\x02" + b"c" + b"m" * 100_000 + b"\nname\n" + pickle.STOP


def _long_numpy_argument() -> bytes:
    """An admitted numpy call given an argument numpy repeats in its own error message."""
    from common.data.safe_pickle import _FROMBUFFER

    class Call:
        def __reduce__(self):
            return _FROMBUFFER, (b"", "f4", (0,), "Z" * 100_000)

    return pickle.dumps(Call(), protocol=4)


@pytest.mark.parametrize("make, fragment", [(_long_global, "refusing to load global mmm"),
                                            (_long_numpy_argument, "corrupt pickle")])
def test_a_hostile_files_values_reach_the_message_bounded(make, fragment, tmp_path):
    """Whatever a file holds, the message naming it stays a line a person reads (before: the
    file's 100,000 characters, in one line)."""
    path = tmp_path / "part_000.pkl"
    path.write_bytes(make())
    message = _refused(str(path), fragment)
    assert len(message) < len(str(path)) + 300, len(message)
