"""How a sparse gradient with repeated rows reaches Adam: TF1's way or Keras 3's.

The center loss gathers one center per example, so the centers' gradient is an
``IndexedSlices`` with one row per example: a label seen n times in the batch is n
rows with the same index. The two Adams treat those rows differently:

* TF1 (the original's ``tf.train.AdamOptimizer``) first sums the rows of each index
  (``_apply_sparse_duplicate_indices``), then decays every row of both moments,
  adds (1-b1)*g and (1-b2)*g^2 at the summed rows, and updates every row of the
  variable. That is exactly dense Adam on the dense gradient (the summed rows, zero
  elsewhere): ``"tf1"`` converts the slices to that dense tensor.
* Keras 3 squares each row before adding them up, so the second moment of a label
  seen n times receives sum_i g_i^2 instead of (sum_i g_i)^2, and the step differs
  (when the rows agree, up to sqrt(n) times the original's: 2.6x at n = 7):
  ``"keras"`` passes the slices through unchanged.

Only the second moment differs, and only where a row index repeats in one batch.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

SPARSE_ADAM_MODES = ("tf1", "keras")
ORIGINAL_SPARSE_ADAM = "tf1"
# What runs made before the choice existed did (recorded so a resume names the change).
BEFORE_THE_OPTION = "keras"


def check_mode(mode: str) -> str:
    """``mode`` itself, or ValueError naming the valid ones."""
    if mode not in SPARSE_ADAM_MODES:
        raise ValueError(f"sparse_adam must be one of {SPARSE_ADAM_MODES}, got {mode!r}")
    return mode


def gradients_for_adam(grads: Sequence, mode: str) -> list:
    """The gradients as ``mode``'s Adam should see them (None entries kept).

    Args:
        grads: one gradient per variable: a tensor, ``tf.IndexedSlices`` or None.
        mode: "tf1" (sum repeated rows: dense tensor) or "keras" (unchanged).

    Example:
        >>> g = tf.IndexedSlices(tf.ones((3, 2)), tf.constant([0, 0, 1]), tf.constant([4, 2]))
        >>> gradients_for_adam([g], "tf1")[0].numpy()[:, 0].tolist()
        [2.0, 1.0, 0.0, 0.0]
    """
    check_mode(mode)
    if mode == "keras":
        return list(grads)
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
