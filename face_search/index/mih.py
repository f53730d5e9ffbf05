"""Multi-index hashing (Norouzi, Punjani, Fleet, CVPR 2012): exact k-NN, sub-linear.

Why our own: faiss's hashing and IVF indexes are approximate; on clustered 48-bit codes
they found 67-93% of the true top 10 at the settings tried, or were slower (measured,
docs/BENCHMARKS.md, "Face search"). Multi-index hashing is exact by construction and
returns the project evaluator's order (distance, then position).

The code is cut into m substrings of at most 16 bits; table t lists the items of each
substring value (positions ascending) with a copy of their codes, so that a bucket is
read as one contiguous run instead of one random memory access per item (2x faster,
measured; the copies cost 8 bytes per item and table). A query probes, for s = 0, 1,
..., the buckets of every substring value at distance s from its own, table by table,
and checks each item found with its full distance. An item not yet found after table t
at radius s differs in at least s + 1 bits in tables 0..t and s bits in the others, so
its distance is at least m*s + t + 1 (pigeonhole): once the k-th best distance found is
<= m*s + t, the answer is complete. A query far from everything (more candidates than a
quarter of the gallery) is reported incomplete for the caller to answer with a flat
scan.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from common.metrics.kernels import popcount64

MAX_SUBSTRING_BITS = 16
MAX_K = 256            # the top-k list is kept sorted by insertion: small k only
PARALLEL_MIN = 64      # queries from which a call uses numba's threads
_FAR = np.int32(1 << 30)


def substrings(num_bits: int) -> list[tuple[int, int]]:
    """Bit ranges [lo, hi) of the tables: ceil(bits / 16) near-equal substrings."""
    m = -(-int(num_bits) // MAX_SUBSTRING_BITS)
    edges = [round(i * num_bits / m) for i in range(m + 1)]
    return [(edges[i], edges[i + 1]) for i in range(m)]


def substring_keys(words: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Value of bits [lo, hi) of every code (uint64 words (N, W), bit b in word b // 64)."""
    width = hi - lo
    word, shift = divmod(lo, 64)
    keys = words[:, word] >> np.uint64(shift)
    if shift + width > 64:  # the substring continues in the next word
        keys = keys | (words[:, word + 1] << np.uint64(64 - shift))
    return (keys & np.uint64((1 << width) - 1)).astype(np.int64)


class MultiIndexHash:
    """The tables of multi-index hashing over uint64 words (N, W) of codes."""

    candidate_fraction = 0.25  # more candidates than this share of the gallery: give up

    def __init__(self, num_bits: int, words: np.ndarray) -> None:
        self.num_bits = int(num_bits)
        self.ranges = substrings(num_bits)
        self.words = words
        self.lengths = np.array([hi - lo for lo, hi in self.ranges], np.int64)
        n = len(words)
        index_type = np.int32 if n < 2**31 else np.int64
        self.order = np.empty((len(self.ranges), n), index_type)
        self.table_codes = np.empty((len(self.ranges), n, words.shape[1]), np.uint64)
        offsets, self.base = [], np.zeros(len(self.ranges) + 1, np.int64)
        for t, (lo, hi) in enumerate(self.ranges):
            keys = substring_keys(words, lo, hi).astype(np.uint16)  # radix sort, stable
            self.order[t] = np.argsort(keys, kind="stable")
            self.table_codes[t] = words[self.order[t]]
            counts = np.bincount(keys, minlength=1 << (hi - lo))
            offsets.append(np.concatenate([[0], np.cumsum(counts)]))
            self.base[t + 1] = self.base[t] + len(offsets[-1])
        self.offsets = np.concatenate(offsets).astype(np.int64)

    @property
    def nbytes(self) -> int:
        """Memory of the tables (the codes themselves not counted)."""
        return int(self.order.nbytes + self.table_codes.nbytes + self.offsets.nbytes)

    def knn(self, queries: np.ndarray, k: int, parallel: bool | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact top-k of each query (uint64 words (nq, W)), ordered by (distance, position).

        ``parallel``: spread queries over numba's threads (default: from PARALLEL_MIN
        queries on; one query takes ~0.1-1 ms, less than waking the threads is worth).

        Returns:
            (distances int32 (nq, k), positions int64 (nq, k), complete bool (nq,)); rows
            not complete stopped early (too many candidates) and must be answered otherwise.
        """
        n = len(self.words)
        k = min(int(k), n)
        if not 1 <= k <= MAX_K:
            raise ValueError(f"multi-index hashing answers 1..{MAX_K} neighbours, got {k}")
        qkeys = np.stack([substring_keys(queries, lo, hi) for lo, hi in self.ranges], axis=1)
        out_d = np.full((len(queries), k), _FAR, np.int32)
        out_p = np.full((len(queries), k), -1, np.int64)
        complete = np.zeros(len(queries), np.bool_)
        limit = int(n * self.candidate_fraction)
        if parallel is None:
            parallel = len(queries) >= PARALLEL_MIN
        kernel = _knn_parallel if parallel else _knn_serial
        kernel(np.ascontiguousarray(queries), qkeys, self.table_codes, self.order, self.offsets,
               self.base, self.lengths, limit, out_d, out_p, complete)
        return out_d, out_p, complete


@njit(cache=True, nogil=True, inline="always")
def _insert(best_d, best_p, filled, d, p):
    """Insert (d, p) into the sorted top-k lists; returns the new fill count."""
    k = best_d.shape[0]
    if filled == k and (d > best_d[k - 1] or (d == best_d[k - 1] and p >= best_p[k - 1])):
        return filled
    i = 0
    while i < filled:
        if best_d[i] > d or (best_d[i] == d and best_p[i] >= p):
            break
        i += 1
    if i < filled and best_d[i] == d and best_p[i] == p:
        return filled  # found before through another table
    j = filled if filled < k else k - 1
    while j > i:
        best_d[j] = best_d[j - 1]
        best_p[j] = best_p[j - 1]
        j -= 1
    best_d[i] = d
    best_p[i] = p
    return filled + 1 if filled < k else k


@njit(cache=True, nogil=True)
def _knn_one(q, qkeys, table_codes, order, offsets, base, lengths, limit, best_d, best_p):
    """One query; returns True when the answer is complete (see the module docstring)."""
    m = lengths.shape[0]
    nwords = table_codes.shape[2]
    k = best_d.shape[0]
    filled = 0
    visited = 0
    longest = 0
    for t in range(m):
        longest = max(longest, lengths[t])
    for s in range(longest + 1):
        for t in range(m):
            if s > lengths[t]:
                return True  # table t was probed at every radius: every item was seen
            top = np.int64(1) << lengths[t]
            mask = (np.int64(1) << s) - 1
            while mask < top:
                bucket = base[t] + (qkeys[t] ^ mask)
                for j in range(offsets[bucket], offsets[bucket + 1]):
                    p = order[t, j]
                    d = 0
                    for w in range(nwords):
                        d += popcount64(q[w] ^ table_codes[t, j, w])
                    filled = _insert(best_d, best_p, filled, np.int32(d), np.int64(p))
                visited += offsets[bucket + 1] - offsets[bucket]
                if mask == 0:
                    break
                low = mask & -mask  # Gosper's hack: next mask with the same bit count
                ripple = mask + low
                mask = (((ripple ^ mask) >> 2) // low) | ripple
            if filled == k and best_d[k - 1] <= m * s + t:
                return True
            if visited > limit:
                return False
    return True


@njit(parallel=True, cache=True, nogil=True)
def _knn_parallel(queries, qkeys, table_codes, order, offsets, base, lengths, limit, out_d,
                  out_p, complete):
    for i in prange(queries.shape[0]):
        complete[i] = _knn_one(queries[i], qkeys[i], table_codes, order, offsets, base, lengths,
                               limit, out_d[i], out_p[i])


@njit(cache=True, nogil=True)
def _knn_serial(queries, qkeys, table_codes, order, offsets, base, lengths, limit, out_d,
                out_p, complete):
    for i in range(queries.shape[0]):
        complete[i] = _knn_one(queries[i], qkeys[i], table_codes, order, offsets, base, lengths,
                               limit, out_d[i], out_p[i])
