"""DFH's loss terms, each a pure function of tensors (dfh_tf/README.md says why each).

* :func:`pair_loss`: the metric part, DSH's margin contrastive loss (Liu et al., CVPR
  2016) on the relaxed codes, in normalised Hamming units, positives and negatives
  averaged separately so that the rare same-identity pairs of a batch count.
* :func:`sign_loss`: the sign control, CSQ's per-bit cross-entropy towards the identity's
  hash center (Yuan et al., CVPR 2020), on the pre-tanh activations (stable form).
* :func:`hash_centers`: those centers, binary, spread by best-candidate sampling.
* :func:`quantization_loss`: quadratic ``(|h| - 1)^2`` (DFH's) or first-order
  ``| |h| - 1 |`` (DDAH's), mean over samples and bits.
* :func:`distillation_loss`: Hinton's soft-target KL from the feature classifier
  (teacher) to the code classifier (student), times T^2.
* :func:`similarity_distillation_loss`: the other reading of "distillation" (relational:
  Park et al., CVPR 2019): the codes' pairwise cosine similarities learn the feature
  classifier's, with no classifier on the codes.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from common.methods.base import batch_mean

QUANTIZATIONS = ("quadratic", "first_order")
PAIR_MARGIN = 0.5       # DSH's m = 2K on squared distances = half the bits apart
TEMPERATURE = 4.0       # Hinton et al.'s soft targets
CENTER_CANDIDATES = 64  # best-candidate sampling: candidates drawn per center


def pair_distances(codes: tf.Tensor) -> tf.Tensor:
    """(B, B) squared Euclidean distances of relaxed codes over 4K: Hamming / K when binary."""
    codes = tf.cast(codes, tf.float32)
    squared = tf.reduce_sum(tf.square(codes), axis=1)
    inner = tf.matmul(codes, codes, transpose_b=True)
    bits = tf.cast(tf.shape(codes)[1], tf.float32)
    return tf.maximum(squared[:, None] + squared[None, :] - 2.0 * inner, 0.0) / (4.0 * bits)


def pair_loss(codes: tf.Tensor, labels: tf.Tensor, margin: float = PAIR_MARGIN) -> tf.Tensor:
    """mean over same-identity pairs of d + mean over other pairs of max(0, margin - d).

    ``d`` is :func:`pair_distances`; pairs are unordered and distinct (i < j). A batch
    without positive (or negative) pairs contributes 0 for that half.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    d = pair_distances(codes)
    n = tf.shape(labels)[0]
    upper = tf.linalg.band_part(tf.ones([n, n]), 0, -1) - tf.eye(n)  # i < j
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    positive, negative = same * upper, (1.0 - same) * upper
    pull = tf.math.divide_no_nan(tf.reduce_sum(positive * d), tf.reduce_sum(positive))
    push = tf.math.divide_no_nan(tf.reduce_sum(negative * tf.nn.relu(margin - d)),
                                 tf.reduce_sum(negative))
    return pull + push


def sign_loss(pre_activations: tf.Tensor, labels: tf.Tensor, centers: tf.Tensor) -> tf.Tensor:
    """mean_ik softplus(-2 c_{y_i k} a_ik): CSQ's cross-entropy between (1 + tanh a) / 2 and
    (1 + c) / 2, written on the pre-tanh activation ``a`` so it never takes log(0).

    Gradient: d/da = -2 c sigmoid(-2 c a) / (B K): every bit is pushed towards its
    identity center's sign until it agrees with it by a margin.
    """
    target = tf.gather(tf.cast(centers, tf.float32), tf.cast(labels, tf.int32))
    return batch_mean(tf.nn.softplus(-2.0 * target * tf.cast(pre_activations, tf.float32)))


def hash_centers(num_classes: int, num_bits: int, seed: int = 0) -> np.ndarray:
    """(num_classes, num_bits) +-1 identity centers, far apart, the same for the same arguments.

    Best-candidate sampling: each center is the one of ``CENTER_CANDIDATES`` random
    codes farthest (minimum Hamming distance) from the centers chosen before it.
    CSQ uses Hadamard rows when 2K >= classes; with 311 identities at 12..48 bits it
    falls back to random codes, which at 12 bits collide (about 12 equal pairs among
    311): the sampling keeps them apart.
    """
    if num_classes < 1 or num_bits < 1:
        raise ValueError(f"need num_classes >= 1 and num_bits >= 1, got {num_classes}, {num_bits}")
    rng = np.random.default_rng([seed, num_classes, num_bits])
    centers = np.empty((num_classes, num_bits), np.int8)
    for c in range(num_classes):
        candidates = rng.integers(0, 2, (CENTER_CANDIDATES, num_bits)).astype(np.int8) * 2 - 1
        if c:
            agreement = candidates.astype(np.int32) @ centers[:c].T.astype(np.int32)
            distance = (num_bits - agreement) // 2
            candidates = candidates[[int(np.argmax(distance.min(axis=1)))]]
        centers[c] = candidates[0]
    return centers


def quantization_loss(codes: tf.Tensor, kind: str = "quadratic") -> tf.Tensor:
    """mean_ik (|h_ik| - 1)^2 ("quadratic") or mean_ik | |h_ik| - 1 | ("first_order").

    Gradient in h: 2 (|h| - 1) sign(h) (vanishes as |h| -> 1, largest at h = 0) against
    sign(|h| - 1) sign(h) (magnitude 1 everywhere): README, "Quadratic quantization".
    """
    gap = tf.abs(tf.cast(codes, tf.float32)) - 1.0
    if kind == "quadratic":
        return batch_mean(tf.square(gap))
    if kind == "first_order":
        return batch_mean(tf.abs(gap))
    raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {kind!r}")


def distillation_loss(student_logits: tf.Tensor, teacher_logits: tf.Tensor,
                      temperature: float = TEMPERATURE) -> tf.Tensor:
    """T^2 mean_i KL(softmax(t_i / T) || softmax(s_i / T)), the teacher held fixed.

    Gradient in s: T (softmax(s / T) - softmax(t / T)) / B (Hinton et al., 2015).
    """
    t = tf.stop_gradient(tf.cast(teacher_logits, tf.float32)) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    target = tf.nn.softmax(t)
    kl = tf.reduce_sum(target * (tf.nn.log_softmax(t) - tf.nn.log_softmax(s)), axis=1)
    return temperature ** 2 * batch_mean(kl)


def similarity_distillation_loss(codes: tf.Tensor, teacher_logits: tf.Tensor) -> tf.Tensor:
    """mean_ij (cos(h_i, h_j) - cos(t_i, t_j))^2 over the batch's pairs, the teacher fixed.

    ``h`` are the relaxed codes, ``t`` the feature classifier's logits (held fixed by a
    stop-gradient). For binary codes cos(h_i, h_j) = 1 - 2 d_H / K, so the codes learn the
    teacher's relations (one identity near, others about K/2 apart) instead of having to
    classify every identity themselves. The diagonal (1 = 1) adds nothing; a row of zeros
    has cosine 0 with everything. 0 for an empty batch.
    """
    h = tf.math.l2_normalize(tf.cast(codes, tf.float32), axis=1)
    t = tf.math.l2_normalize(tf.stop_gradient(tf.cast(teacher_logits, tf.float32)), axis=1)
    return batch_mean(tf.square(tf.matmul(h, h, transpose_b=True)
                                - tf.matmul(t, t, transpose_b=True)))
