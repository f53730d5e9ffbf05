"""Retrieval metrics over binary codes: exact or legacy Hamming distance, index or expected ties."""

from common.metrics.hamming import binarize, hamming_distances, legacy_bits, pack_words
from common.metrics.retrieval import HAMMING_MODES, METRIC_KEYS, TIE_MODES, retrieval_metrics

__all__ = [
    "HAMMING_MODES",
    "METRIC_KEYS",
    "TIE_MODES",
    "binarize",
    "hamming_distances",
    "legacy_bits",
    "pack_words",
    "retrieval_metrics",
]
