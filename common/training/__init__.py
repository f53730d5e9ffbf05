"""Shared training machinery: data loading, the loop, checkpoints, evaluation.

Submodules are imported on first use: ``common.training.data`` needs no TensorFlow
(the command line validates data before paying for TensorFlow's import), the rest do.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "SplitData": "common.training.data",
    "load_split_data": "common.training.data",
    "DATASETS": "common.training.data",
    "TrainConfig": "common.training.loop",
    "NonFiniteLossError": "common.training.loop",
    "RunConfigMismatchError": "common.training.loop",
    "train": "common.training.loop",
    "CheckpointStore": "common.runs.checkpoints.store",
    "CheckpointError": "common.runs.checkpoints.layout",
    "restore_model_weights": "common.runs.checkpoints.store",
    "compute_codes": "common.training.evaluate",
    "evaluate_retrieval": "common.training.evaluate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'common.training' has no attribute {name!r}")
