"""Exact k-nearest and radius search with faiss's binary flat index, ties by position.

Why faiss: its flat binary scan is a maintained, multi-threaded XOR-popcount over the
whole gallery, 8-10x faster than numpy here (docs/BENCHMARKS.md, "Face search").
Why more than a faiss call: faiss does not promise which of several equally distant
items it returns. The contract here is the project evaluator's (``ties="index"``):
results ordered by (distance, position), and positions follow gallery ids. So each
query asks faiss for a window of candidates wider than k; when the window's last
distance exceeds the k-th, every item at the k-th distance is inside it and sorting
the window by (distance, position) is exact. Queries whose ties overflow the window (3%
of them at 2k on clustered 48-bit codes) ask again with a window 8x wider; past 65,536
(thousands of identical codes) a numpy scan of all distances answers instead.
"""

from __future__ import annotations

import logging

import numpy as np

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its INFO lines on every start
# imported after quieting its loader:
import faiss  # noqa: E402

from face_search.index.codes import popcount_distances, word_count  # noqa: E402

QUERY_BLOCK = 256        # queries per faiss call
COUNTING_MAX_K = 256     # faiss's counting selection (faster than its heap) up to this k
MAX_WINDOW = 1 << 16     # ties beyond: a numpy scan (no faiss result of that width)
_POSITION_BITS = 40      # positions < 2**40 in the (distance, position) sort key


def window_size(k: int, total: int) -> int:
    """Candidates asked of faiss for a top-``k`` query: room for ties past the k-th."""
    return min(total, max(2 * k, k + 32))


class FlatSearcher:
    """faiss ``IndexBinaryFlat`` over widened codes (``face_search.index.codes.widen``)."""

    def __init__(self, num_bits: int) -> None:
        self.num_bits = int(num_bits)
        self._dims = 64 * word_count(num_bits)
        self._index = faiss.IndexBinaryFlat(self._dims)
        self._words = np.zeros((0, word_count(num_bits)), np.uint64)

    @property
    def total(self) -> int:
        return int(self._index.ntotal)

    def reset(self, wide: np.ndarray) -> None:
        """Hold exactly ``wide`` (uint8 (N, 8W)), in this order."""
        self._index.reset()
        self._words = wide.view(np.uint64)
        if len(wide):
            self._index.add(wide)

    def append(self, wide: np.ndarray, new: int) -> None:
        """``wide`` is what this searcher held plus ``new`` rows at its end."""
        self._words = wide.view(np.uint64)
        if new:
            self._index.add(wide[len(wide) - new:])

    def knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest of each widened query: (distances int32, positions int64),
        both (nq, min(k, total)), ordered by (distance, position)."""
        k = min(int(k), self.total)
        nq = len(queries)
        if k == 0 or nq == 0:
            return np.zeros((nq, k), np.int32), np.zeros((nq, k), np.int64)
        out_d = np.empty((nq, k), np.int32)
        out_p = np.empty((nq, k), np.int64)
        for start in range(0, nq, QUERY_BLOCK):
            block = queries[start:start + QUERY_BLOCK]
            d, p = self._knn_block(block, k)
            out_d[start:start + len(block)] = d
            out_p[start:start + len(block)] = p
        return out_d, out_p

    def _knn_block(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_d = np.empty((len(queries), k), np.int32)
        out_p = np.empty((len(queries), k), np.int64)
        rows = np.arange(len(queries))
        window = window_size(k, self.total)
        while len(rows):
            if window > MAX_WINDOW and window < self.total:  # ties by the thousand: scan
                for row in rows:
                    out_d[row], out_p[row] = self._scan_knn(queries[row], k)
                break
            step = max(1, (1 << 20) // window)  # bounds faiss's result arrays
            unresolved = []
            for start in range(0, len(rows), step):
                part = rows[start:start + step]
                d, p, complete = self._window(queries[part], k, window)
                out_d[part[complete]], out_p[part[complete]] = d[complete], p[complete]
                unresolved.append(part[~complete])
            rows = np.concatenate(unresolved)
            window = min(self.total, window * 8)
        return out_d, out_p

    def _window(self, queries: np.ndarray, k: int, window: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k from faiss's ``window`` nearest; complete where every item at the k-th
        distance is inside the window."""
        self._index.use_heap = window > COUNTING_MAX_K  # type: ignore[attr-defined]  # SWIG field, not in the stubs
        dist, pos = self._index.search(queries, window)
        keys = np.sort((dist.astype(np.int64) << _POSITION_BITS) | pos, axis=1)
        kth = keys[:, k - 1] >> _POSITION_BITS
        complete = ((keys[:, -1] >> _POSITION_BITS) > kth) | (window == self.total)
        top = keys[:, :k]
        return ((top >> _POSITION_BITS).astype(np.int32),
                top & ((1 << _POSITION_BITS) - 1), complete)

    def _scan_knn(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of one query from all distances (numpy), ties by position."""
        dist = popcount_distances(query.view(np.uint64), self._words)
        kth = np.partition(dist, k - 1)[k - 1]
        closer = np.flatnonzero(dist < kth)
        tied = np.flatnonzero(dist == kth)[:k - len(closer)]
        chosen = np.concatenate([closer, tied])
        chosen = chosen[np.lexsort((chosen, dist[chosen]))]
        return dist[chosen], chosen.astype(np.int64)

    def within(self, queries: np.ndarray, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every item within Hamming ``radius`` of each query: [(distances, positions)],
        ordered by (distance, position)."""
        if self.total == 0:
            return [(np.zeros(0, np.int32), np.zeros(0, np.int64)) for _ in queries]
        lims, dist, pos = self._index.range_search(queries, int(radius) + 1)  # faiss: d < r
        out = []
        for i in range(len(queries)):
            d = np.asarray(dist[lims[i]:lims[i + 1]]).astype(np.int32)
            p = np.asarray(pos[lims[i]:lims[i + 1]]).astype(np.int64)
            order = np.lexsort((p, d))
            out.append((d[order], p[order]))
        return out
