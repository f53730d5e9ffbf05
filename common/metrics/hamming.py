"""Binary codes: binarisation, packing, Hamming distances, and the legacy distortion.

Codes are handled as bit matrices (n, bits) of bool with bit = (code >= 0): the
original's ``sign`` with 0 mapped to +1. Distances are popcounts of XOR-ed 64-bit
words, so any bit count works (several words past 64 bits).
"""

from __future__ import annotations

import numpy as np

_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def binarize(codes: np.ndarray, name: str = "codes") -> np.ndarray:
    """Real-valued or +-1 codes (n, bits) -> bool bits, True where code >= 0 (0 -> +1)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, bits), got shape {codes.shape}")
    if codes.shape[1] < 1:
        raise ValueError(f"{name} must have at least one bit")
    if codes.dtype == bool:
        raise ValueError(f"{name}: pass real-valued or +-1 codes, not booleans (sign decides the bit)")
    if codes.dtype.kind == "f" and not np.all(np.isfinite(codes)):
        raise ValueError(f"{name} hold non-finite values")
    return codes >= 0


def legacy_bits(bits: np.ndarray) -> np.ndarray:
    """The original evaluation's distorted bit vector (its ``compactbit`` fed +-1 values).

    ``compactbit`` sums ``2**i * v_i`` over each group of 8 bits (the last group may be
    shorter) expecting v in {0, 1}, but gets v in {-1, +1}; the sum (between -255 and
    255) is stored into uint8 and wraps modulo 256. Hamming distance between these bytes
    is what every original figure was computed on. Returns bool (n, 8 * n_bytes).
    """
    bits = np.asarray(bits, dtype=bool)
    n, nbits = bits.shape
    nbytes = -(-nbits // 8)
    signs = np.zeros((n, nbytes * 8), dtype=np.int64)  # missing bits of the last group add 0
    signs[:, :nbits] = np.where(bits, 1, -1)
    weights = 1 << np.arange(8, dtype=np.int64)
    sums = (signs.reshape(n, nbytes, 8) * weights).sum(axis=2)
    stored = np.mod(sums, 256).astype(np.uint8)
    return np.unpackbits(stored, axis=1).astype(bool)


def pack_words(bits: np.ndarray) -> np.ndarray:
    """bool (n, bits) -> uint64 (n, ceil(bits / 64)), zero-padded (padding adds no distance)."""
    bits = np.asarray(bits, dtype=bool)
    n, nbits = bits.shape
    nwords = -(-nbits // 64)
    padded = np.zeros((n, nwords * 64), dtype=bool)
    padded[:, :nbits] = bits
    return np.packbits(padded, axis=1).view(np.uint64).reshape(n, nwords)


def popcount(words: np.ndarray) -> np.ndarray:
    """Bits set in each uint64 word (uint8 result)."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: hardware popcount
        return np.bitwise_count(words)
    as_bytes = words.view(np.uint8).reshape(*words.shape, 8)
    return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


def distances_to(query_words: np.ndarray, db_words: np.ndarray) -> np.ndarray:
    """Hamming distances (q, n) from packed queries (q, w) to packed database (n, w)."""
    dist = popcount(query_words[:, None, 0] ^ db_words[None, :, 0])
    if query_words.shape[1] == 1:
        return dist
    dist = dist.astype(np.uint16)
    for w in range(1, query_words.shape[1]):
        dist += popcount(query_words[:, None, w] ^ db_words[None, :, w])
    return dist


def hamming_distances(query_codes: np.ndarray, db_codes: np.ndarray, hamming: str = "exact") -> np.ndarray:
    """Dense Hamming distance matrix between two sets of codes (exact or legacy)."""
    q, d = binarize(query_codes, "query_codes"), binarize(db_codes, "db_codes")
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits, database codes {d.shape[1]}")
    if hamming == "legacy":
        q, d = legacy_bits(q), legacy_bits(d)
    elif hamming != "exact":
        raise ValueError(f"hamming must be 'exact' or 'legacy', got {hamming!r}")
    return distances_to(pack_words(q), pack_words(d))
