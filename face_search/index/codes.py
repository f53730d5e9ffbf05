"""The packed code layout every part of the search shares, and its checks.

Codes are the exports' ``packed`` output (``common.export.serving``): uint8 (N, ceil(bits/8)),
bit b of the code in bit (b % 8) of byte b // 8, least significant bit first, padding
bits 0. A padding bit set by mistake would add distance to every comparison, silently,
so :func:`check_packed` refuses it. Searches run on codes widened to whole 64-bit words
(:func:`widen`): faiss compares 8-byte codes three times faster than 6-byte ones (0.75
against 0.25 billion codes/s on one core here), and the zero bytes add no distance.
"""

from __future__ import annotations

import numpy as np

from common.metrics.hamming import popcount

MAX_BITS = 1024  # as common.cli.runner.MAX_BITS: the methods are meant for 12..48 bits


def code_bytes(num_bits: int) -> int:
    """Bytes of one packed code of ``num_bits`` bits."""
    return -(-int(num_bits) // 8)


def check_num_bits(num_bits: int) -> int:
    """``num_bits`` as an int in 1..MAX_BITS (ValueError otherwise)."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, (int, np.integer)):
        raise TypeError(f"num_bits must be an integer, got {num_bits!r}")
    if not 1 <= int(num_bits) <= MAX_BITS:
        raise ValueError(f"num_bits must be in 1..{MAX_BITS}, got {num_bits}")
    return int(num_bits)


def padding_mask(num_bits: int) -> int:
    """The bits of the last byte that must be 0 (0 when ``num_bits`` is a multiple of 8)."""
    used = num_bits % 8
    return 0 if used == 0 else 0xFF ^ ((1 << used) - 1)


def check_packed(packed, num_bits: int, name: str = "codes") -> np.ndarray:
    """``packed`` as a C-contiguous uint8 (N, code_bytes(num_bits)) array, checked.

    Raises:
        ValueError: another dtype (nothing is cast: 0/1 or +-1 codes must be packed
            first), another width, or padding bits set.
    """
    if not isinstance(packed, np.ndarray):
        raise ValueError(f"{name} must be a numpy uint8 array of packed codes, got "
                         f"{type(packed).__name__}")
    if packed.dtype != np.uint8:
        raise ValueError(f"{name} are {packed.dtype}, not packed uint8 codes; pack 0/1 or "
                         "+-1 codes with np.packbits(codes > 0, axis=1, bitorder='little')")
    width = code_bytes(num_bits)
    if packed.ndim != 2 or packed.shape[1] != width:
        raise ValueError(f"{name} have shape {packed.shape}, expected (N, {width}) for "
                         f"{num_bits}-bit codes")
    mask = padding_mask(num_bits)
    if mask and len(packed) and np.any(packed[:, -1] & mask):
        row = int(np.flatnonzero(packed[:, -1] & mask)[0])
        raise ValueError(f"{name} row {row} has padding bits set beyond bit {num_bits} "
                         "(the packing must be LSB first, padding 0)")
    return np.ascontiguousarray(packed)


def word_count(num_bits: int) -> int:
    """64-bit words of a widened code."""
    return -(-int(num_bits) // 64)


def widen(packed: np.ndarray, num_bits: int) -> np.ndarray:
    """uint8 (N, code_bytes) -> uint8 (N, 8 * word_count) with zero bytes appended."""
    width = 8 * word_count(num_bits)
    out = np.zeros((len(packed), width), np.uint8)
    out[:, :packed.shape[1]] = packed
    return out


def popcount_distances(query_words: np.ndarray, words: np.ndarray) -> np.ndarray:
    """Hamming distances (int32) of one widened query (W,) uint64 to ``words`` (N, W)."""
    dist = np.zeros(len(words), np.int32)
    for w in range(words.shape[1]):
        dist += popcount(words[:, w] ^ query_words[w])
    return dist
