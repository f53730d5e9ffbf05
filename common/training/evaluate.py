"""Codes and retrieval figures of a model, the original's protocol.

Why separate: the loop, the final report and export all need "model -> codes ->
mAP", and the evaluated state may be a checkpoint rather than the live weights.
Queries are the test split, the database is the whole train split, relevant means
same label (DDH / DCBH protocol).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from common.errors import WorkFailedError
from common.io import interrupts
from common.models.batch_norm import frozen_moving_statistics
from common.methods.base import CODES, HashingMethod
from common.metrics import retrieval_metrics

class NonFiniteCodesError(WorkFailedError, FloatingPointError):
    """A model gave NaN or inf codes: it cannot be evaluated (exit 1, one error line)."""


# How codes are computed: "moving": inference mode, batch norm with its moving statistics
# (a face's code does not depend on its batch; what an export serves); "batch": each batch
# normalised with its own statistics, the moving ones left untouched (the original DDAH's
# evaluation, which never switches its network to inference mode).
EVAL_BATCH_NORMS = ("moving", "batch")
QUERY_SPLITS = ("validation", "test")

_PREDICTORS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _predictor(model, method: HashingMethod, batch_norm: str = "moving"):
    """One traced inference function per model and batch-norm mode (no retracing)."""
    if batch_norm not in EVAL_BATCH_NORMS:
        raise ValueError(f"eval_batch_norm must be one of {EVAL_BATCH_NORMS}, got {batch_norm!r}")
    fns = _PREDICTORS.setdefault(model, {})
    fn = fns.get(batch_norm)
    if fn is None:
        index = list(method.output_names).index(CODES)
        inference = method.inference_model(model)  # e.g. DDAH: pass a only
        ref: Callable[[], Any]
        if inference is model:
            ref = weakref.ref(model)  # the cache must not keep the model alive
        else:  # shares the model's layers, not the model object: the cache entry can go
            ref = lambda: inference  # noqa: E731

        @tf.function(input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)],
                     reduce_retracing=True)
        def fn(images):
            network = ref()
            if batch_norm == "batch":
                with frozen_moving_statistics(network):
                    outputs = network(images, training=True)
            else:
                outputs = network(images, training=False)
            return tf.cast(outputs[index], tf.float32)

        fns[batch_norm] = fn
    return fn


def compute_codes(model, method: HashingMethod, images: np.ndarray,
                  batch_size: int = 1024, batch_norm: str = "moving") -> np.ndarray:
    """Relaxed codes (n, bits) float32 of ``images`` (``batch_norm``: see EVAL_BATCH_NORMS).

    The sign of each value is the bit (0 -> +1), as the original's ``sign`` step.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fn = _predictor(model, method, batch_norm)
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
                       batch_size: int = 1024, queries: str = "test",
                       eval_batch_norm: str = "moving") -> dict[str, float]:
    """Retrieval metrics of ``model``: a query split against the train split.

    Args:
        model: the trained model (any weights currently loaded in it).
        method: its method (names the codes output).
        data: a :class:`common.training.data.SplitData`.
        hamming, ties, top_k, radius: see :func:`common.metrics.retrieval_metrics`.
        queries: "test" (the reported figures) or "validation" (what selects a state).
        eval_batch_norm: "moving" (inference mode) or "batch" (see EVAL_BATCH_NORMS).

    Returns:
        {"map", "precision_at_k", "precision_within_radius", "recall_within_radius"}.
    """
    query_images, query_labels = data.queries(queries)
    query_codes = compute_codes(model, method, query_images, batch_size, eval_batch_norm)
    database = compute_codes(model, method, data.train_images, batch_size, eval_batch_norm)
    if not (np.all(np.isfinite(query_codes)) and np.all(np.isfinite(database))):
        raise NonFiniteCodesError("the model's codes of these images are not finite (its "
                                  "weights diverged); it is not evaluated")
    return retrieval_metrics(query_codes, query_labels, database, data.train_labels,
                             top_k=top_k, radius=radius, hamming=hamming, ties=ties)
