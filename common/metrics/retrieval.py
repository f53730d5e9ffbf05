"""Exact, fast retrieval metrics over binary codes (the DDH / DCBH protocol).

Queries are ranked against the whole database by Hamming distance; an item is
relevant when it has the query's label. The figures follow the original
``RetrievalTest.search``:

* mAP: average precision over the whole ranked database, averaged over all queries
  (a query with no relevant item counts as AP 0);
* precision of the top ``top_k`` (divided by ``min(top_k, database size)``);
* macro precision and recall of the items within Hamming ``radius`` (a query that
  retrieves nothing has precision 0; one with no relevant item has recall 0).

How it is fast without a per-query sort: distances take only ``bits + 1`` values, so
a ranking is fixed by per-distance counts plus, under index ties, the position of
each relevant item among the items at its distance that come before it in the
database. Two engines compute exactly that:

* "numba" (default when numba imports): one compiled pass over the database per
  query, keeping a running histogram (``common.metrics.kernels``), queries in
  parallel threads;
* "numpy": queries are processed one label at a time; the label's relevant items
  cut the database into segments, and one ``bincount`` over (segment, distance) keys
  gives, for every relevant item, how many items precede it at its own distance.

Under ``ties="expected"`` the figures are the exact expectations over a uniformly
random order of equally distant items, in closed form (no sampling): within a
distance group of n items, m relevant, preceded by N items of which M relevant,
slot p (1..n) is relevant with probability m/n and, given that, expects
M + 1 + (p-1)(m-1)/(n-1) relevant items at or before it; summing over p with
harmonic numbers gives the group's expected contribution to AP.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import numbers
import os

import numpy as np

from common.metrics.hamming import (
    CODE_FORMATS,
    binarize_pair,
    distances_to,
    legacy_bits,
    pack_words,
)

HAMMING_MODES = ("exact", "legacy")
TIE_MODES = ("index", "expected")
ENGINES = ("auto", "numba", "numpy")
METRIC_KEYS = ("map", "precision_at_k", "precision_within_radius", "recall_within_radius")

# Upper bound on query x database elements handled at once (bounds temporary memory:
# ~10 bytes per element).
_CHUNK_ELEMENTS = 1 << 22
# Index ties use the (segment, distance) histogram while it has at most this many bins
# per database item; past that (very few labels, huge label groups) a stable sort per
# query is cheaper.
_SEGMENT_BINS_PER_ITEM = 4


def _check_labels(labels: np.ndarray, n: int, name: str) -> np.ndarray:
    """Labels as a 1-D array of length ``n``; float labels must be whole numbers.

    Labels of any comparable type are fine, but NaN never equals itself (each NaN
    query would silently have no relevant item) and 2.5 is a measurement, not an
    identity.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{name} must have shape ({n},), got {labels.shape}")
    if labels.dtype.kind == "c":
        raise ValueError(f"{name} must be integers or names, got dtype {labels.dtype}")
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if np.any(bad):
            index = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} must be whole numbers, found {labels[index].item()!r} "
                             f"at index {index}")
    if labels.dtype.kind == "O":
        nan = np.array([isinstance(v, float) and v != v for v in labels], dtype=bool)
        if np.any(nan):
            raise ValueError(f"{name} hold NaN at index {int(np.flatnonzero(nan)[0])}")
    return labels


def _check_count(value: object, name: str, minimum: int) -> int:
    """An integer option (Python or numpy int, not bool) of at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class _Accumulator:
    """Per-query results, filled label group by label group."""

    def __init__(self, num_queries: int):
        self.ap = np.zeros(num_queries)
        self.p_at_k = np.zeros(num_queries)
        self.p_radius = np.zeros(num_queries)
        self.r_radius = np.zeros(num_queries)


def _radius_figures(acc, rows, n_within, m_within, num_relevant):
    acc.p_radius[rows] = np.divide(m_within, n_within, out=np.zeros(len(rows)), where=n_within > 0)
    if num_relevant:
        acc.r_radius[rows] = m_within / num_relevant


def _index_tie_group(acc, rows, dist, relevant, nbins, top_k, radius):
    """Metrics for queries ``rows`` sharing one label, ties broken by database index."""
    num_q, num_db = dist.shape
    num_rel = len(relevant)
    # segment(k) = number of relevant indices <= k; one histogram per (segment, distance).
    segment = np.zeros(num_db, dtype=np.intp)
    segment[relevant] = 1
    np.cumsum(segment, out=segment)
    segment *= nbins
    seg_bins = (num_rel + 1) * nbins
    hist = np.empty((num_q, num_rel + 1, nbins), dtype=np.intp)
    for i in range(num_q):  # per row: no row-offset pass over the keys
        hist[i] = np.bincount(segment + dist[i], minlength=seg_bins).reshape(num_rel + 1, nbins)
    np.cumsum(hist, axis=1, out=hist)
    per_dist = hist[:, num_rel, :]                              # items at each distance
    before = np.cumsum(per_dist, axis=1) - per_dist             # items strictly closer
    rel_dist = dist[:, relevant].astype(np.intp)                # (q, R)
    q_idx = np.arange(num_q)[:, None]
    # Items at the same distance before relevant item t: segments 0..t (inclusive cumsum).
    same_before = hist[q_idx, np.arange(num_rel)[None, :], rel_dist]
    ranks = before[q_idx, rel_dist] + same_before               # 0-based ranks
    ranks.sort(axis=1)
    acc.ap[rows] = np.mean(np.arange(1, num_rel + 1) / (ranks + 1), axis=1)
    acc.p_at_k[rows] = np.count_nonzero(ranks < top_k, axis=1) / top_k
    within = min(radius, nbins - 1)
    n_within = np.cumsum(per_dist, axis=1)[:, within]
    m_within = np.count_nonzero(rel_dist <= radius, axis=1)
    _radius_figures(acc, rows, n_within, m_within, num_rel)


def _index_tie_group_by_sort(acc, rows, dist, relevant, nbins, top_k, radius):
    """Same figures via a stable sort per query; cheaper when a label has very many items."""
    num_rel = len(relevant)
    is_rel = np.zeros(dist.shape[1], dtype=bool)
    is_rel[relevant] = True
    for i, row in enumerate(rows):
        order = np.argsort(dist[i], kind="stable")
        ranks = np.flatnonzero(is_rel[order])
        acc.ap[row] = np.mean(np.arange(1, num_rel + 1) / (ranks + 1))
        acc.p_at_k[row] = np.count_nonzero(ranks < top_k) / top_k
    n_within = np.count_nonzero(dist <= radius, axis=1)
    m_within = np.count_nonzero(dist[:, relevant] <= radius, axis=1)
    _radius_figures(acc, rows, n_within, m_within, num_rel)


def _expected_tie_group(acc, rows, dist, relevant, nbins, top_k, radius, harmonic):
    """Exact expectations over random orders of equally distant items."""
    num_q = dist.shape[0]
    num_rel = len(relevant)
    n_d = np.stack([np.bincount(row, minlength=nbins) for row in dist])
    m_d = np.stack([np.bincount(row, minlength=nbins) for row in dist[:, relevant]])
    n_before = np.cumsum(n_d, axis=1) - n_d
    m_before = np.cumsum(m_d, axis=1) - m_d
    # sum_{p=1..n} 1/(N+p) and sum_{p=1..n} (p-1)/(N+p)
    s0 = harmonic[n_before + n_d] - harmonic[n_before]
    s1 = n_d - (n_before + 1) * s0
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.where(n_d > 1, (m_d - 1) / np.maximum(n_d - 1, 1), 0.0)
        share = np.where(n_d > 0, m_d / np.maximum(n_d, 1), 0.0)
    contrib = share * ((m_before + 1) * s0 + spread * s1)
    acc.ap[rows] = contrib.sum(axis=1) / num_rel
    # top_k: whole groups before the cut, then a uniform share of the cut group.
    n_upto = n_before + n_d
    cut = np.argmax(n_upto >= top_k, axis=1)
    q_idx = np.arange(num_q)
    taken = top_k - n_before[q_idx, cut]
    expected_rel = m_before[q_idx, cut] + taken * share[q_idx, cut]
    acc.p_at_k[rows] = expected_rel / top_k
    within = min(radius, nbins - 1)
    _radius_figures(acc, rows, n_upto[:, within], np.cumsum(m_d, axis=1)[:, within], num_rel)


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _harmonic_numbers(n: int) -> np.ndarray:
    """H[0..n] with H[i] = 1 + 1/2 + ... + 1/i (float64)."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


def _numba_stats(q_words, q_ids, d_words, d_ids, num_ids, nbins, top_k, radius, ties, workers):
    """Per-query figures (q, 4) from the compiled kernel."""
    import numba

    from common.metrics.kernels import query_stats

    rel_items = np.argsort(d_ids, kind="stable").astype(np.int64)
    rel_ptr = np.searchsorted(d_ids[rel_items], np.arange(num_ids + 1)).astype(np.int64)
    harmonic = _harmonic_numbers(len(d_words)) if ties == "expected" else np.zeros(1)
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(workers, numba.config.NUMBA_NUM_THREADS)))
    try:
        return query_stats(q_words, q_ids.astype(np.int64), d_words, rel_ptr, rel_items,
                           nbins, top_k, radius, ties == "expected", harmonic)
    finally:
        numba.set_num_threads(previous)


def _numpy_stats(q_words, q_ids, d_words, d_ids, nbins, top_k, radius, ties, workers):
    """Per-query figures (q, 4), label group by label group, in numpy."""
    num_db = len(d_words)
    harmonic = _harmonic_numbers(num_db) if ties == "expected" else None
    db_order = np.argsort(d_ids, kind="stable")
    db_sorted = d_ids[db_order]
    q_unique, q_inverse = np.unique(q_ids, return_inverse=True)
    q_by_label = np.argsort(q_inverse, kind="stable")
    q_starts = np.searchsorted(q_inverse[q_by_label], np.arange(len(q_unique) + 1))
    acc = _Accumulator(len(q_words))
    chunk = max(1, _CHUNK_ELEMENTS // num_db)

    def run_label(g: int) -> None:
        rows_all = q_by_label[q_starts[g]:q_starts[g + 1]]
        lo = np.searchsorted(db_sorted, q_unique[g], "left")
        hi = np.searchsorted(db_sorted, q_unique[g], "right")
        relevant = db_order[lo:hi]  # ascending (stable sort)
        if len(relevant) == 0:
            return  # AP, precision@k, precision and recall all stay 0
        for start in range(0, len(rows_all), chunk):
            rows = rows_all[start:start + chunk]
            dist = distances_to(q_words[rows], d_words)
            if ties == "expected":
                _expected_tie_group(acc, rows, dist, relevant, nbins, top_k, radius, harmonic)
            elif (len(relevant) + 1) * nbins <= _SEGMENT_BINS_PER_ITEM * num_db:
                _index_tie_group(acc, rows, dist, relevant, nbins, top_k, radius)
            else:
                _index_tie_group_by_sort(acc, rows, dist, relevant, nbins, top_k, radius)

    if workers > 1 and len(q_unique) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run_label, range(len(q_unique))))
    else:
        for g in range(len(q_unique)):
            run_label(g)
    return np.stack([acc.ap, acc.p_at_k, acc.p_radius, acc.r_radius], axis=1)


def retrieval_metrics(query_codes: np.ndarray, query_labels: np.ndarray,
                      db_codes: np.ndarray, db_labels: np.ndarray, top_k: int = 50,
                      radius: int = 2, hamming: str = "exact", ties: str = "index",
                      workers: int | None = None, engine: str = "auto",
                      code_format: str = "signed") -> dict[str, float]:
    """mAP, precision@k and precision/recall within a Hamming radius.

    Args:
        query_codes: (q, bits) codes in ``code_format``.
        query_labels: (q,) labels of the queries (integers, whole-number floats or
            any comparable type such as names; NaN is refused).
        db_codes: (n, bits) database codes.
        db_labels: (n,) database labels; relevant = same label as the query.
        top_k: cut-off of the precision@k (the original: 50); an integer >= 1.
        radius: Hamming radius of the precision/recall (the original: 2); an
            integer >= 0.
        hamming: "exact" Hamming distance, or "legacy": the original evaluation's
            distorted distance (its bit packing drops bit 7 of every byte and
            mis-weights a partial last byte), reproduced bit for bit.
        ties: "index": equal distances ranked by database index (deterministic);
            "expected": exact expectation over a uniformly random order of ties.
        workers: threads (default: number of CPUs, at most 8).
        engine: "numba" (compiled), "numpy", or "auto" (numba when installed).
            Both give the same figures.
        code_format: "signed" (default): real-valued or +-1 codes, bit = sign with
            0 -> +1, as the original; bool or unsigned codes and codes holding only
            0 and 1 are refused, since this reading would make every bit set.
            "binary": 0/1 or bool codes, 1 = bit set (the same figures as the
            equivalent +-1 codes).

    Returns:
        dict with float values for "map", "precision_at_k",
        "precision_within_radius", "recall_within_radius".

    Raises:
        TypeError: ``top_k`` or ``radius`` is not an integer (bool included).
        ValueError: an unknown option, out-of-range ``top_k``/``radius``, codes that
            are not 2-D, hold NaN or inf or do not match ``code_format``, or labels
            of the wrong length or with NaN / fractional values.
    """
    if hamming not in HAMMING_MODES:
        raise ValueError(f"hamming must be one of {HAMMING_MODES}, got {hamming!r}")
    if ties not in TIE_MODES:
        raise ValueError(f"ties must be one of {TIE_MODES}, got {ties!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if code_format not in CODE_FORMATS:
        raise ValueError(f"code_format must be one of {CODE_FORMATS}, got {code_format!r}")
    top_k = _check_count(top_k, "top_k", 1)
    radius = _check_count(radius, "radius", 0)
    q_bits, d_bits = binarize_pair(query_codes, db_codes, code_format)
    if len(q_bits) == 0 or len(d_bits) == 0:
        raise ValueError("need at least one query and one database item")
    q_labels = _check_labels(query_labels, len(q_bits), "query_labels")
    d_labels = _check_labels(db_labels, len(d_bits), "db_labels")
    if hamming == "legacy":
        q_bits, d_bits = legacy_bits(q_bits), legacy_bits(d_bits)

    # Dense label ids shared by queries and database (labels may be any comparable type).
    all_ids = np.unique(np.concatenate([q_labels, d_labels]), return_inverse=True)[1]
    q_ids, d_ids = all_ids[:len(q_labels)], all_ids[len(q_labels):]
    nbins = q_bits.shape[1] + 1
    top_k = min(top_k, len(d_bits))
    radius = min(radius, nbins - 1)  # every distance is at most the bit count
    q_words, d_words = pack_words(q_bits), pack_words(d_bits)
    workers = int(workers or min(8, os.cpu_count() or 1))
    if engine == "auto":
        engine = "numba" if _numba_available() else "numpy"
    if engine == "numba":
        stats = _numba_stats(q_words, q_ids, d_words, d_ids, int(all_ids.max()) + 1, nbins,
                             top_k, radius, ties, workers)
    else:
        stats = _numpy_stats(q_words, q_ids, d_words, d_ids, nbins, top_k, radius, ties, workers)
    means = stats.mean(axis=0)
    return {key: float(value) for key, value in zip(METRIC_KEYS, means)}
