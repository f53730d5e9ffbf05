"""tf.data input pipeline over in-memory arrays.

The whole split lives once in memory as a TensorFlow tensor; each epoch is a dataset
of index batches gathered from it, so the order of epoch ``e`` is a pure function of
``(seed, e)``. That makes a resumed run see exactly the batches an uninterrupted run
would have seen, without replaying earlier epochs' shuffles.

Memory: one float32 copy of the images, 3072 * 4 B = 12 KiB per image. FaceScrub's
train split (67,177 images) is 825 MB, YouTube Faces' (63,800) 784 MB; the prefetch
buffer adds a few batches (3 MiB per batch of 256).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

ORIGINAL_BATCH_SIZE = 256


def epoch_order(num_examples: int, epoch: int, shuffle: bool, seed: int) -> np.ndarray:
    """Example order of one epoch: file order, or a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return np.arange(num_examples, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(num_examples).astype(np.int64)


class ArrayPipeline:
    """Batches of ``(images, labels)`` from arrays held once in memory.

    Args:
        images: (n, 32, 32, 3) float32 images (already preprocessed).
        labels: (n,) integer labels.
        batch_size: examples per batch; the last batch of an epoch holds the
            remainder, as in the original, unless ``drop_remainder``.
        shuffle: reshuffle every epoch. Default False: the original took batches in
            file order, and the released files are already mixed.
        seed: seed of the shuffles.
        drop_remainder: drop the last, smaller batch.
        deterministic: keep the batch order fixed even with parallel gathering.

    Example:
        >>> pipe = ArrayPipeline(x, y, batch_size=256, shuffle=True, seed=1)
        >>> for images, labels in pipe.epoch(0):
        ...     ...
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray,
                 batch_size: int = ORIGINAL_BATCH_SIZE, shuffle: bool = False, seed: int = 0,
                 drop_remainder: bool = False, deterministic: bool = True):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_examples = len(labels)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_remainder = bool(drop_remainder)
        self.deterministic = bool(deterministic)
        self._images = tf.convert_to_tensor(images, dtype=tf.float32)
        self._labels = tf.convert_to_tensor(np.asarray(labels, dtype=np.int64))

    def tensors(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The split as held in memory: (images float32, labels int64)."""
        return self._images, self._labels

    def steps_per_epoch(self) -> int:
        """Number of batches in one epoch."""
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (1 if rest and not self.drop_remainder else 0)

    def epoch(self, epoch: int = 0) -> tf.data.Dataset:
        """The dataset of batches for epoch ``epoch`` (0-based)."""
        order = epoch_order(self.num_examples, epoch, self.shuffle, self.seed)
        images, labels = self._images, self._labels

        def gather(index):
            return tf.gather(images, index), tf.gather(labels, index)

        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.batch(self.batch_size, drop_remainder=self.drop_remainder)
        ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=self.deterministic)
        options = tf.data.Options()
        options.deterministic = self.deterministic
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
