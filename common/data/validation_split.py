"""Hold out a validation split from the train split, per identity, seeded.

Why: choosing a run's state (``best_map``) by its mAP on the test split flatters every
method and unstable ones most. DDH's protocol, which DCBH and the others reuse, holds out
10% of the training set for validation; the state is chosen on it, and the test split is
scored once, on the chosen state.

Rule: for each identity with n train images, ``round(fraction * n)`` of them (at most
n - 1, so every identity keeps a train image) are drawn at random into the validation
split; the rest stay, in file order, as the train split, which is also the retrieval
database. The draw is a pure function of the labels, the fraction and the seed (numpy's
PCG64 seeded with ``seed``, identities in increasing label order), so every run with the
same data and seed holds out the same rows, whatever its training seed. TensorFlow-free.
"""

from __future__ import annotations

import numpy as np

from common.data.errors import DataFormatError

DEFAULT_SEED = 0


def validation_indices(labels: np.ndarray, fraction: float,
                       seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): sorted int64 indices into ``labels``.

    Args:
        labels: (n,) integer identity labels of the train split.
        fraction: share of each identity's images held out, in [0, 1).
        seed: seed of the draw (independent of the training seed).

    Raises:
        ValueError: ``fraction`` outside [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    everything = np.arange(len(labels), dtype=np.int64)
    if fraction == 0.0 or len(labels) == 0:
        return everything, np.zeros(0, np.int64)
    rng = np.random.default_rng(int(seed))
    order = np.argsort(labels, kind="stable")
    _, starts = np.unique(labels[order], return_index=True)
    held = []
    for rows in np.split(order, starts[1:]):
        count = min(int(np.floor(fraction * len(rows) + 0.5)), len(rows) - 1)
        if count > 0:
            held.append(rng.choice(rows, size=count, replace=False))
    validation = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    train = np.setdiff1d(everything, validation, assume_unique=True)
    return train.astype(np.int64), validation.astype(np.int64)


def nothing_held_out(labels: np.ndarray, fraction: float, without: str) -> str:
    """Why ``fraction`` holds out no image of ``labels``, and what would; ``without``
    says what 0 means to the caller (e.g. "chosen on the test split")."""
    most = int(np.unique(labels, return_counts=True)[1].max()) if len(labels) else 0
    if most < 2:
        return (f"validation_fraction {fraction:g} holds out no image: no identity has two "
                f"train images (one must stay in the train split); use 0 ({without})")
    return (f"validation_fraction {fraction:g} holds out no image: an identity gives "
            f"round({fraction:g} x its train images), and the largest has {most}; use at "
            f"least {np.ceil(500 / most) / 1000:g}, or 0 ({without})")


def checked_validation_indices(labels: np.ndarray, fraction: float, seed: int, folder: str,
                               without: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`validation_indices`, refusing a ``fraction`` > 0 that holds out nothing.

    Why refuse: the user asked for a validation split; going on without one would choose
    states on the test split (a hashing run) or let validation faces into training (the
    GAN, its variants), the opposite of what was asked.

    Raises:
        DataFormatError: ``fraction`` > 0 holds out no image (names ``folder``; ``without``:
            what 0 would mean, see :func:`nothing_held_out`).
        ValueError: ``fraction`` outside [0, 1).
    """
    kept, held = validation_indices(labels, fraction, seed)
    if fraction > 0 and not len(held):
        raise DataFormatError(folder, nothing_held_out(labels, fraction, without))
    return kept, held
