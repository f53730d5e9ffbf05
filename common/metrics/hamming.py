"""Binary codes: binarisation, packing, Hamming distances, and the legacy distortion.

Codes are handled as bit matrices (n, bits) of bool. Two input formats, never guessed:

* ``code_format="signed"`` (default): real-valued or +-1 codes, bit = (code >= 0), the
  original's ``sign`` with 0 mapped to +1. 0/1 codes read this way would all be ones,
  so bool and unsigned dtypes, and codes holding only the values 0 and 1 (both
  present), are refused: they must be declared ``"binary"``. All-zero codes stay legal
  (a model that outputs 0 gives all +1 bits, as in the original).
* ``code_format="binary"``: 0/1 (or bool) codes, bit = (code == 1); any other value is
  refused.

Distances are popcounts of XOR-ed 64-bit words, so any bit count works (several words
past 64 bits).
"""

from __future__ import annotations

import numpy as np

_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
CODE_FORMATS = ("signed", "binary")


def _as_code_array(codes: np.ndarray, name: str, code_format: str) -> np.ndarray:
    """Shape, dtype and finiteness checks shared by both formats."""
    if code_format not in CODE_FORMATS:
        raise ValueError(f"code_format must be one of {CODE_FORMATS}, got {code_format!r}")
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, bits), got shape {codes.shape}")
    if codes.shape[1] < 1:
        raise ValueError(f"{name} must have at least one bit")
    if codes.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric codes, got dtype {codes.dtype}")
    if codes.dtype.kind == "f" and not np.all(np.isfinite(codes)):
        raise ValueError(f"{name} hold non-finite values (NaN or inf)")
    return codes


def _is_zero_one(codes: np.ndarray) -> bool:
    """Every value is 0 or 1 (cheap range test first)."""
    if codes.size == 0 or codes.min() < 0 or codes.max() > 1:
        return False
    return bool(np.all((codes == 0) | (codes == 1)))


def _refuse_zero_one(name: str) -> None:
    raise ValueError(
        f"{name} hold only the values 0 and 1: read as signed codes (sign, 0 -> +1) every bit "
        'would be set; pass code_format="binary" for 0/1 codes')


def binarize(codes: np.ndarray, name: str = "codes", code_format: str = "signed") -> np.ndarray:
    """Codes (n, bits) -> bool bits, in the declared ``code_format`` (module docstring).

    Raises:
        ValueError: not 2-D, no bits, non-numeric, NaN or inf, or not in the format
            (signed: bool/unsigned dtype or 0/1 values; binary: a value other than 0/1).
    """
    codes = _as_code_array(codes, name, code_format)
    if code_format == "binary":
        if codes.dtype.kind == "b":
            return codes.astype(bool, copy=False)
        if not _is_zero_one(codes):
            bad = codes[(codes != 0) & (codes != 1)].flat[0].item()
            raise ValueError(f'{name}: code_format="binary" takes 0/1 codes, found {bad!r}; '
                             'pass code_format="signed" for real-valued or +-1 codes')
        return codes == 1
    if codes.dtype.kind == "b":
        raise ValueError(f"{name}: booleans are 0/1 codes, not signed ones; pass "
                         'code_format="binary" (True = bit set)')
    if codes.dtype.kind == "u":
        raise ValueError(f"{name}: unsigned integer codes cannot be signed; pass "
                         'code_format="binary" for 0/1 codes')
    if _is_zero_one(codes) and np.any(codes == 0) and np.any(codes == 1):
        _refuse_zero_one(name)
    return codes >= 0


def binarize_pair(query_codes: np.ndarray, db_codes: np.ndarray,
                  code_format: str = "signed") -> tuple[np.ndarray, np.ndarray]:
    """Binarise queries and database alike; under "signed" also refuse 0/1 codes split
    across the two (e.g. all-zero queries against all-one database codes)."""
    q = binarize(query_codes, "query_codes", code_format)
    d = binarize(db_codes, "db_codes", code_format)
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits, database codes {d.shape[1]}")
    if code_format == "signed":
        q_raw, d_raw = np.asarray(query_codes), np.asarray(db_codes)
        if (_is_zero_one(q_raw) and _is_zero_one(d_raw)
                and (np.any(q_raw == 0) or np.any(d_raw == 0))
                and (np.any(q_raw == 1) or np.any(d_raw == 1))):
            _refuse_zero_one("query_codes and db_codes together")
    return q, d


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


def hamming_distances(query_codes: np.ndarray, db_codes: np.ndarray, hamming: str = "exact",
                      code_format: str = "signed") -> np.ndarray:
    """Dense Hamming distance matrix between two sets of codes (exact or legacy)."""
    q, d = binarize_pair(query_codes, db_codes, code_format)
    if hamming == "legacy":
        q, d = legacy_bits(q), legacy_bits(d)
    elif hamming != "exact":
        raise ValueError(f"hamming must be 'exact' or 'legacy', got {hamming!r}")
    return distances_to(pack_words(q), pack_words(d))
