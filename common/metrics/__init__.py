"""Retrieval metrics over binary codes: exact or legacy Hamming distance, index or expected ties."""

from common.metrics.hamming import (
    CODE_FORMATS,
    binarize,
    binarize_pair,
    hamming_distances,
    legacy_bits,
    pack_words,
)
from common.metrics.retrieval import HAMMING_MODES, METRIC_KEYS, TIE_MODES, retrieval_metrics

__all__ = [
    "CODE_FORMATS",
    "HAMMING_MODES",
    "METRIC_KEYS",
    "TIE_MODES",
    "binarize",
    "binarize_pair",
    "hamming_distances",
    "legacy_bits",
    "pack_words",
    "retrieval_metrics",
]
