"""Brute-force references for the retrieval metrics, written independently of common.metrics.

Distances are computed bit by bit, rankings with an explicit lexsort, AP with the
textbook cumulative-precision loop; the legacy distance transcribes the original
``compactbit`` + look-up-table ``hammingDist``; expected ties average the index-tie
figures over every permutation of the database (tiny sizes only).
"""

import itertools

import numpy as np


def signs(codes):
    return np.where(np.asarray(codes) >= 0, 1.0, -1.0)


def legacy_pack(b):
    """The original compactbit applied to +-1 values, with uint8 wrap-around."""
    n, nb = b.shape
    nw = int(np.ceil(nb / 8))
    out = np.zeros((n, nw), np.int64)
    for i in range(n):
        for j in range(nw):
            part = b[i, j * 8:(j + 1) * 8]
            out[i, j] = int(sum((2 ** k) * part[k] for k in range(len(part)))) % 256
    return out


def distances(q, d, legacy=False):
    qs, ds = signs(q), signs(d)
    if not legacy:
        return (qs[:, None, :] != ds[None, :, :]).sum(-1)
    lut = np.array([bin(i).count("1") for i in range(256)])
    a, b = legacy_pack(qs), legacy_pack(ds)
    return lut[a[:, None, :] ^ b[None, :, :]].sum(-1)


def metrics(q, ql, d, dl, top_k=50, radius=2, legacy=False):
    """Index-tie figures: equal distances ranked by database index."""
    return metrics_from_distances(distances(q, d, legacy), ql, dl, top_k, radius)


def metrics_from_distances(dist, ql, dl, top_k, radius, order=None):
    """Index-tie figures; ``order`` permutes the database first (ties then follow it)."""
    nq, n = dist.shape
    k = min(top_k, n)
    idx = np.arange(n) if order is None else np.asarray(order)
    out = np.zeros((nq, 4))
    for i in range(nq):
        ranked = idx[np.lexsort((np.arange(n), dist[i, idx]))]
        rel = (dl[ranked] == ql[i]).astype(float)
        hits = 0
        precisions = []
        for pos in range(n):
            if rel[pos]:
                hits += 1
                precisions.append(hits / (pos + 1))
        out[i, 0] = np.mean(precisions) if precisions else 0.0
        out[i, 1] = rel[:k].sum() / k
        retrieved = dist[i] <= radius
        relevant = dl == ql[i]
        both = (retrieved & relevant).sum()
        out[i, 2] = both / retrieved.sum() if retrieved.sum() else 0.0
        out[i, 3] = both / relevant.sum() if relevant.sum() else 0.0
    return out.mean(axis=0)


def expected_metrics(q, ql, d, dl, top_k=50, radius=2, legacy=False):
    """Mean of the index-tie figures over all n! database orders (n <= 7)."""
    dist = distances(q, d, legacy)
    total = np.zeros(4)
    count = 0
    for perm in itertools.permutations(range(len(d))):
        total += metrics_from_distances(dist, ql, dl, top_k, radius, order=perm)
        count += 1
    return total / count
