"""Hostile pickles whose cost grows faster than their size are refused in linear time.

A dict or set of keys with equal hashes costs n**2 / 2 key comparisons to build (an
840 KB pickle took 30 s in plain ``pickle.load``, 2.1 MB did not finish in 289 s); the
restricted unpickler (common.data.safe_pickle) refuses every opcode that builds or fills
one, before it builds anything, since the layout never holds one. The other cases here
are the superlinear costs left once those are gone: protocol 0's PUT filling the memo
(a dict) with colliding keys, SETITEM filling a whole array per opcode, ``repr`` of
shared nested lists in an error message (exponential in the depth) and one stored long
encoding name normalised on every ``_codecs.encode`` call.

Each file (about 0.5 MB) is refused by the guard its message names, which acts before the
costly structure is built; unguarded, these sizes take seconds to hours (the old reader: a
colliding dict of 308 KB 5.5 s, of 1 MB over 90 s). That the refusal takes linear time is a
benchmark's to measure, not a unit test's (``bench/adversarial_pass.py``, class 3: "hostile
pickles cost linear time"). Each builder's growth is shown by what it holds (distinct keys
of one hash, a 65-way fan-out per level, ...).
"""

from __future__ import annotations

import pickle
import pickletools
import struct

import numpy as np
import pytest

from common.data import ROW_WIDTH, DataFormatError, load_pickle_file
from common.data.safe_pickle import MAX_MEMO_KEY, RestrictedUnpickler, restricted_loads

MERSENNE = 2 ** 61 - 1  # Python hashes integers (and floats) modulo this prime
SIZE = 1 << 19          # about half a megabyte of pickle per case
_ND = b"cnumpy\nndarray\n"
_ENCODE = b"c_codecs\nencode\n"


def _int(v: int) -> bytes:
    if 0 <= v < 2 ** 31:
        return pickle.BININT + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def _float(v: float) -> bytes:
    return pickle.BINFLOAT + struct.pack(">d", v)


def colliding_ints(n: int) -> list[int]:
    """``n`` distinct integers that all hash to 0."""
    return [k * MERSENNE for k in range(1, n + 1)]


def colliding_pairs(n: int) -> list[tuple[float, int]]:
    """``n`` distinct tuples (float, int) that all hash alike: 2.0 ** (61 * j) hashes to 1."""
    floats = [2.0 ** (61 * j) for j in range(-17, 17)]
    return [(floats[i % len(floats)], MERSENNE * (1 + i // len(floats))) for i in range(n)]


def _well_formed(data: bytes) -> bytes:
    """``data`` once every opcode parses (genops: ``dis`` keeps a memo dict of its own)."""
    ends = [op.name for op, _, _ in pickletools.genops(data)][-1:]
    assert ends == ["STOP"]
    return data


def _stream(body: bytes, protocol: int = 2) -> bytes:
    return _well_formed(pickle.PROTO + bytes([protocol]) + body + pickle.STOP)


def _count(per_item: int) -> int:
    return SIZE // per_item


def dict_setitems() -> bytes:
    keys = b"".join(_int(k) + pickle.NONE for k in colliding_ints(_count(11)))
    return _stream(pickle.EMPTY_DICT + pickle.MARK + keys + pickle.SETITEMS)


def dict_of_pairs_after_its_items() -> bytes:
    """MARK k v k v ... DICT: every key is pushed (linearly) before the refusal."""
    keys = b"".join(pickle.MARK + _float(f) + _int(i) + pickle.TUPLE + pickle.NONE
                    for f, i in colliding_pairs(_count(23)))
    return _stream(pickle.MARK + keys + pickle.DICT)


def dict_protocol0_text() -> bytes:
    """``(dp0`` then ``L<key>L`` / ``N`` / ``s`` per item, as Python 2 wrote dicts."""
    items = b"".join(b"L%dL\nNs" % k for k in colliding_ints(_count(25)))
    return _well_formed(b"(dp0\n" + items + b".")


def set_additems() -> bytes:
    keys = b"".join(_int(k) for k in colliding_ints(_count(10)))
    return _stream(pickle.EMPTY_SET + pickle.MARK + keys + pickle.ADDITEMS, protocol=4)


def frozenset_of_pairs() -> bytes:
    keys = b"".join(pickle.MARK + _float(f) + _int(i) + pickle.TUPLE
                    for f, i in colliding_pairs(_count(22)))
    return _stream(pickle.MARK + keys + pickle.FROZENSET, protocol=4)


def dict_after_a_genuine_array() -> bytes:
    """(x, {colliding keys}): a real image array first, then the dict as y."""
    x = np.random.default_rng(0).integers(0, 256, (8, ROW_WIDTH)).astype(np.float32)
    array = pickle.dumps(x, protocol=2)[2:-1]  # without PROTO and STOP
    keys = b"".join(_int(k) + pickle.NONE for k in colliding_ints(_count(11)))
    return _stream(array + pickle.EMPTY_DICT + pickle.MARK + keys + pickle.SETITEMS
                   + pickle.TUPLE2)


def memo_put_collisions() -> bytes:
    """Protocol 0: one value stored under colliding memo keys (the memo is a dict)."""
    return _well_formed(b"I1\n" + b"".join(b"p%d\n" % k for k in colliding_ints(_count(24)))
                        + b".")


def setitem_fills_an_array(fills: int | None = None) -> bytes:
    """ndarray((1 MiB,), 'u1') (within the memory slack), then ``a[()] = 0`` per 7 bytes."""
    array = _ND + pickle.MARK + pickle.MARK + _int(1 << 20) + pickle.TUPLE + \
        pickle.SHORT_BINUNICODE + b"\x02u1" + pickle.TUPLE + pickle.REDUCE
    fill = pickle.EMPTY_TUPLE + pickle.BININT1 + b"\x00" + pickle.SETITEM
    return _stream(array + fill * (_count(len(fill)) if fills is None else fills))


def nested_lists_as_a_shape(depth: int = 40, width: int = 65) -> bytes:
    """A shape of 65 references to a list of 65 references to ...: 65 ** 40 leaves."""
    level = pickle.EMPTY_LIST + pickle.MARK + pickle.BININT1 + b"\x01" + \
        pickle.DUP * (width - 1) + pickle.APPENDS + pickle.BINPUT + b"\x00" + pickle.POP
    for d in range(1, depth):
        level += (pickle.EMPTY_LIST + pickle.MARK + (pickle.BINGET + bytes([d - 1])) * width
                  + pickle.APPENDS + pickle.BINPUT + bytes([d]) + pickle.POP)
    call = _ND + pickle.MARK + pickle.BINGET + bytes([depth - 1]) + pickle.TUPLE + pickle.REDUCE
    return _stream(level + call)


def long_encoding_name_reused() -> bytes:
    """A 1 MB encoding name ('latin1' and dashes, a valid one) stored once, used per call."""
    name = "latin1" + "-" * SIZE
    stored = pickle.BINUNICODE + struct.pack("<I", len(name)) + name.encode() + \
        pickle.BINPUT + b"\x01"

    def call(encoding: bytes) -> bytes:
        return _ENCODE + pickle.MARK + pickle.SHORT_BINUNICODE + b"\x00" + encoding + \
            pickle.TUPLE + pickle.REDUCE + pickle.POP

    return _stream(call(stored) + call(pickle.BINGET + b"\x01") * 1000 + pickle.NONE)


CASES = {
    "dict_setitems": (dict_setitems, "pickle opcode EMPTY_DICT"),
    "dict_of_pairs_after_its_items": (dict_of_pairs_after_its_items, "pickle opcode DICT"),
    "dict_protocol0_text": (dict_protocol0_text, "pickle opcode DICT"),
    "set_additems": (set_additems, "pickle opcode EMPTY_SET"),
    "frozenset_of_pairs": (frozenset_of_pairs, "pickle opcode FROZENSET"),
    "dict_after_a_genuine_array": (dict_after_a_genuine_array, "pickle opcode EMPTY_DICT"),
    "memo_put_collisions": (memo_put_collisions, f"keys are 0..{MAX_MEMO_KEY}"),
    "setitem_fills_an_array": (setitem_fills_an_array, "pickle opcode SETITEM"),
    "nested_lists_as_a_shape": (nested_lists_as_a_shape, "got a list of 65 items"),
    "long_encoding_name_reused": (long_encoding_name_reused, "_codecs.encode with encoding"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_superlinear_pickles_are_refused_by_their_guard(tmp_path, name):
    build, reason = CASES[name]
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(build())
    with pytest.raises(DataFormatError) as excinfo:
        load_pickle_file(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: not a valid data pickle: "), message
    assert reason in message, message
    assert len(message) < 400 + len(str(path)), message   # messages are bounded too


def test_the_adversarial_keys_really_collide():
    """Distinct keys with one hash: a dict or set of n of them compares n**2 / 2 pairs."""
    for keys in (colliding_ints(500), colliding_pairs(500)):
        assert len(set(map(repr, keys))) == len(keys)
        assert len({hash(k) for k in keys}) == 1


def test_plain_pickle_builds_what_is_refused():
    """The unguarded reader builds these objects (so their cost is real), at a small size."""
    small = [k * MERSENNE for k in range(1, 200)]
    assert pickle.loads(pickle.dumps(dict.fromkeys(small), protocol=2)) == dict.fromkeys(small)
    assert pickle.loads(pickle.dumps(set(small), protocol=4)) == set(small)
    filled = pickle.loads(setitem_fills_an_array(fills=2))  # 2 MiB written, from 36 bytes
    assert filled.shape == (1 << 20,) and not filled.any()


def test_every_opcode_that_builds_a_dict_or_set_is_refused_before_building():
    """Derived from pickle's own opcode table, so a new such opcode fails this test."""
    hashed = [op for op in pickletools.opcodes
              if {s.name for s in op.stack_after} & {"dict", "set", "frozenset"}]
    assert {op.name for op in hashed} == {"EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
                                         "EMPTY_SET", "ADDITEMS", "FROZENSET"}
    for op in hashed:
        code = op.code.encode("latin-1")[0]
        assert RestrictedUnpickler.dispatch[code] is not pickle._Unpickler.dispatch[code]
        with pytest.raises(pickle.UnpicklingError, match=f"pickle opcode {op.name}\\)"):
            # the opcode alone, with what it expects on the stack: refused before it acts
            restricted_loads(pickle.PROTO + b"\x04" + pickle.EMPTY_LIST + pickle.MARK
                             + pickle.NONE + pickle.NONE + op.code.encode("latin-1")
                             + pickle.STOP)


@pytest.mark.parametrize("key, allowed", [(b"0", True), (b"4294967295", True),
                                          (b"4294967296", False), (b"2305843009213693951", False),
                                          (b"-1", False), (b"1" * 5000, False)])
def test_protocol0_memo_keys_are_limited_to_the_binary_range(key, allowed):
    data = b"I7\np" + key + b"\n."
    if allowed:
        assert restricted_loads(data) == 7
    else:
        with pytest.raises(pickle.UnpicklingError, match="memo key"):
            restricted_loads(data)


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_genuine_files_still_load(protocol):
    x = np.random.default_rng(protocol).integers(0, 256, (5, ROW_WIDTH)).astype(np.float32)
    got_x, got_y = restricted_loads(pickle.dumps((x, np.arange(5)), protocol=protocol))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, np.arange(5))
