"""Plain-numpy references shared by the layer and loss tests (float64, written as loops
where the original's TensorFlow ops were, so they share no code with the library)."""

from __future__ import annotations

import numpy as np


def sign(x) -> np.ndarray:
    """sign with 0 -> +1 (and -0.0 -> +1), in float64."""
    return np.where(np.asarray(x) >= 0, 1.0, -1.0)


def cross_entropy(labels, logits) -> float:
    """Mean softmax cross-entropy with integer labels (a (batch,) or (batch, 1) array)."""
    labels = np.asarray(labels).reshape(-1)
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-np.mean(log_softmax[np.arange(len(labels)), labels]))


def center_loss(x, labels, centers, reduction: str = "sum") -> float:
    """0.5 * sum over the batch of ||x_i - c_{y_i}||^2 (divided by the batch for "mean")."""
    diff = np.asarray(x, np.float64) - np.asarray(centers, np.float64)[labels]
    total = 0.5 * np.sum(diff ** 2)
    return total / len(labels) if reduction == "mean" else total


def center_update_delta(x, labels, centers) -> np.ndarray:
    """What the original's direct update subtracts from the centers: unique_with_counts,
    gather, divide by (1 + count), scatter_sub, i.e. delta[y_i] += (c[y_i] - x_i) / (1 + n_{y_i})
    with the old centers, accumulated over repeated labels."""
    centers = np.asarray(centers, np.float64)
    counts: dict = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    delta = np.zeros_like(centers)
    for i, y in enumerate(labels):
        delta[y] += (centers[y] - x[i]) / (1 + counts[y])
    return delta
