"""Real pairs for the pair discriminator: each image with ANOTHER image of its identity.

Why another image and never the same one: D learns that a real pair shows one person
twice in two different pictures, so a generator that copies its input is caught just
like one that changes the person. An identity with a single image in the split has no
other picture; its image is paired with its own horizontal flip (a different picture of
the same face). Pure numpy, seeded by the caller's generator.
"""

from __future__ import annotations

import numpy as np


def sample_partners(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For every index i, a random index j != i with ``labels[j] == labels[i]``.

    Uniform over the other images of the identity. Singletons get ``j == i`` and a
    ``flip`` flag (their partner is their horizontal flip).

    Args:
        labels: (n,) integer labels.
        rng: the random generator (seeded by the caller, e.g. from seed and epoch).

    Returns:
        ``(partners (n,) int64, flip (n,) bool)``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    partners = np.arange(n, dtype=np.int64)
    flip = np.zeros(n, dtype=bool)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    ends = np.r_[starts[1:], n]
    sizes = (ends - starts).astype(np.int64)
    group_start = np.repeat(starts, sizes)           # per sorted position
    group_size = np.repeat(sizes, sizes)
    position = np.arange(n) - group_start
    single = group_size == 1
    # a random offset 1..m-1 from one's own position (mod m) is uniform over the others
    offset = rng.integers(1, np.maximum(group_size, 2))
    partner_pos = np.where(single, position, (position + offset) % np.maximum(group_size, 1))
    partners[order] = order[group_start + partner_pos]
    flip[order] = single
    return partners, flip


def partner_images(images: np.ndarray, partners: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """The partner images, NHWC: ``images[partners]``, horizontally flipped where ``flip``."""
    out = images[partners]
    if flip.any():
        out[flip] = out[flip][:, :, ::-1, :]
    return out
