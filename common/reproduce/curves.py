"""Curves for the figures: precision/recall per Hamming radius, precision@K."""

from __future__ import annotations

import numpy as np

from common.metrics import retrieval_metrics

DEFAULT_TOP_KS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)


def radius_curve(queries, query_labels, database, db_labels, num_bits: int,
                 hamming: str = "exact") -> dict[str, list[float]]:
    """Macro precision and recall of the items within each radius 0..num_bits."""
    precision, recall = [], []
    for radius in range(num_bits + 1):
        r = retrieval_metrics(queries, query_labels, database, db_labels, radius=radius,
                              hamming=hamming)
        precision.append(r["precision_within_radius"])
        recall.append(r["recall_within_radius"])
    return {"radius": list(range(num_bits + 1)), "precision": precision, "recall": recall}


def precision_at_k_curve(queries, query_labels, database, db_labels, top_ks=DEFAULT_TOP_KS,
                         hamming: str = "exact", ties: str = "index") -> dict[str, list]:
    """Precision of the top K for each K (K capped at the database size)."""
    ks = sorted({min(int(k), len(database)) for k in top_ks})
    values = [retrieval_metrics(queries, query_labels, database, db_labels, top_k=k,
                                hamming=hamming, ties=ties)["precision_at_k"] for k in ks]
    return {"k": ks, "precision": values}


def ranking(queries, database, count: int) -> np.ndarray:
    """Database indices of the ``count`` nearest items per query (exact Hamming, index ties)."""
    q = np.where(np.asarray(queries) >= 0, 1, -1).astype(np.int32)
    d = np.where(np.asarray(database) >= 0, 1, -1).astype(np.int32)
    distances = (q.shape[1] - q @ d.T) // 2
    return np.argsort(distances, axis=1, kind="stable")[:, :count]
