"""Compiled per-query retrieval statistics (numba): one pass over the database per query.

For each query the database is scanned once in index order: the XOR-popcount distance
to every item goes into a running histogram, and a relevant item's position among the
equally distant items before it is read off that histogram as it is met. After the
scan the histogram gives the number of items strictly closer, so every relevant
item's rank is known without sorting. Queries run in parallel (``prange``).

numpy has no fast scatter-add (``np.bincount`` costs ~4 ns per element here), which is
why this loop is compiled; ``common.metrics.retrieval`` keeps a pure-numpy engine
for platforms without numba and as an independent cross-check.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, value):
    """LLVM's ctpop on a uint64 (a single instruction where the CPU has popcnt)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _distance(q, d_words, k):
    dist = 0
    for w in range(d_words.shape[1]):
        dist += popcount64(q[w] ^ d_words[k, w])
    return dist


@njit(cache=True, nogil=True)
def _scan(q, d_words, start, stop, lanes):
    """Add the distances of items [start, stop) to four interleaved histograms.

    Four lanes break the store-to-load dependency of consecutive increments of the
    same bin (distances cluster, so that is the common case).
    """
    k = start
    while k + 4 <= stop:
        lanes[0, _distance(q, d_words, k)] += 1
        lanes[1, _distance(q, d_words, k + 1)] += 1
        lanes[2, _distance(q, d_words, k + 2)] += 1
        lanes[3, _distance(q, d_words, k + 3)] += 1
        k += 4
    while k < stop:
        lanes[0, _distance(q, d_words, k)] += 1
        k += 1


@njit(cache=True, nogil=True)
def _query_stats(q, relevant, d_words, nbins, top_k, radius, expected, harmonic, out):
    """Figures of one query into ``out`` (ap, precision@k, precision@r, recall@r).

    ``relevant`` holds the query's relevant database indices in ascending order.
    """
    n = d_words.shape[0]
    num_rel = relevant.shape[0]
    lanes = np.zeros((4, nbins), np.int64)
    rel_hist = np.zeros(nbins, np.int64)
    rel_dist = np.empty(num_rel, np.int64)
    rel_pos = np.empty(num_rel, np.int64)
    k = 0
    for t in range(num_rel):
        j = relevant[t]
        _scan(q, d_words, k, j, lanes)
        dist = _distance(q, d_words, j)
        rel_dist[t] = dist
        rel_pos[t] = lanes[0, dist] + lanes[1, dist] + lanes[2, dist] + lanes[3, dist]
        rel_hist[dist] += 1
        lanes[0, dist] += 1
        k = j + 1
    _scan(q, d_words, k, n, lanes)
    hist = lanes[0] + lanes[1] + lanes[2] + lanes[3]
    within = min(radius, nbins - 1)
    n_within = 0
    m_within = 0
    for d in range(within + 1):
        n_within += hist[d]
        m_within += rel_hist[d]
    out[2] = m_within / n_within if n_within > 0 else 0.0
    out[3] = m_within / num_rel
    before = np.empty(nbins, np.int64)
    m_before = np.empty(nbins, np.int64)
    acc = 0
    macc = 0
    for d in range(nbins):
        before[d] = acc
        m_before[d] = macc
        acc += hist[d]
        macc += rel_hist[d]
    if expected:
        ap = 0.0
        hits_at_k = 0.0
        for d in range(nbins):
            size = hist[d]
            if size == 0:
                continue
            m = rel_hist[d]
            nb = before[d]
            share = m / size
            if m > 0:
                s0 = harmonic[nb + size] - harmonic[nb]
                s1 = size - (nb + 1) * s0
                spread = (m - 1) / (size - 1) if size > 1 else 0.0
                ap += share * ((m_before[d] + 1) * s0 + spread * s1)
            if nb < top_k:
                taken = min(size, top_k - nb)
                hits_at_k += taken * share
        out[0] = ap / num_rel
        out[1] = hits_at_k / top_k
    else:
        ranks = np.empty(num_rel, np.int64)
        for i in range(num_rel):
            ranks[i] = before[rel_dist[i]] + rel_pos[i]
        ranks.sort()
        ap = 0.0
        hits = 0
        for i in range(num_rel):
            ap += (i + 1) / (ranks[i] + 1)
            if ranks[i] < top_k:
                hits += 1
        out[0] = ap / num_rel
        out[1] = hits / top_k


@njit(parallel=True, cache=True, nogil=True)
def query_stats(q_words, q_ids, d_words, rel_ptr, rel_items, nbins, top_k, radius, expected,
                harmonic):
    """Per-query (ap, precision@k, precision@r, recall@r) for all queries, in parallel.

    Args:
        q_words, d_words: packed codes (uint64, one row per code).
        q_ids: dense label id of each query.
        rel_ptr, rel_items: database indices of label id L, ascending, are
            ``rel_items[rel_ptr[L]:rel_ptr[L + 1]]`` (CSR layout).
        nbins: largest possible distance + 1.
        top_k: precision cut-off (at most the database size).
        radius: Hamming radius.
        expected: expected-value ties instead of index ties.
        harmonic: harmonic numbers H[0..n] (used for expected ties).
    """
    num_q = q_words.shape[0]
    out = np.zeros((num_q, 4))
    for i in prange(num_q):
        lo = rel_ptr[q_ids[i]]
        hi = rel_ptr[q_ids[i] + 1]
        if hi > lo:
            _query_stats(q_words[i], rel_items[lo:hi], d_words, nbins, top_k, radius,
                         expected, harmonic, out[i])
    return out
