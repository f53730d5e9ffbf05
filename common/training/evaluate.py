"""Codes and retrieval figures of a model, the original's protocol.

Why separate: the loop, the final report and export all need "model -> codes ->
mAP", and the evaluated state may be a checkpoint rather than the live weights.
Queries are the test split, the database is the whole train split, relevant means
same label (DDH / DCBH protocol).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import tensorflow as tf

from common import interrupts
from common.method import CODES, HashingMethod
from common.metrics import retrieval_metrics

_PREDICTORS: "weakref.WeakKeyDictionary[Any, tf.types.experimental.GenericFunction]" = (
    weakref.WeakKeyDictionary())


def _predictor(model, method: HashingMethod):
    """One traced inference function per model (fixed signature: no retracing)."""
    fn = _PREDICTORS.get(model)
    if fn is None:
        index = list(method.output_names).index(CODES)
        inference = method.inference_model(model)  # e.g. DDAH: pass a only
        if inference is model:
            ref = weakref.ref(model)  # the cache must not keep the model alive
        else:  # shares the model's layers, not the model object: the cache entry can go
            ref = lambda: inference  # noqa: E731

        @tf.function(input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)],
                     reduce_retracing=True)
        def fn(images):
            outputs = ref()(images, training=False)
            return tf.cast(outputs[index], tf.float32)

        _PREDICTORS[model] = fn
    return fn


def compute_codes(model, method: HashingMethod, images: np.ndarray,
                  batch_size: int = 1024) -> np.ndarray:
    """Relaxed codes (n, bits) float32 of ``images`` in inference mode.

    The sign of each value is the bit (0 -> +1), as the original's ``sign`` step.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fn = _predictor(model, method)
    parts = []
    for i in range(0, len(images), batch_size):
        interrupts.check()  # inside training's deferred signals: stop between batches
        parts.append(fn(tf.convert_to_tensor(images[i:i + batch_size], tf.float32)).numpy())
    if not parts:
        return np.zeros((0, int(model.outputs[list(method.output_names).index(CODES)].shape[-1])),
                        np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)


def evaluate_retrieval(model, method: HashingMethod, data, hamming: str = "exact",
                       ties: str = "index", top_k: int = 50, radius: int = 2,
                       batch_size: int = 1024) -> dict[str, float]:
    """Retrieval metrics of ``model``: test split as queries against the train split.

    Args:
        model: the trained model (any weights currently loaded in it).
        method: its method (names the codes output).
        data: a :class:`common.training.data.SplitData`.
        hamming, ties, top_k, radius: see :func:`common.metrics.retrieval_metrics`.

    Returns:
        {"map", "precision_at_k", "precision_within_radius", "recall_within_radius"}.
    """
    queries = compute_codes(model, method, data.test_images, batch_size)
    database = compute_codes(model, method, data.train_images, batch_size)
    if not (np.all(np.isfinite(queries)) and np.all(np.isfinite(database))):
        raise FloatingPointError("the model produced non-finite codes")
    return retrieval_metrics(queries, data.test_labels, database, data.train_labels,
                             top_k=top_k, radius=radius, hamming=hamming, ties=ties)
