"""Run a trained generator over many images in batches (inference mode, seeded noise).

Why one helper: the figure, the identity check and the augmentation all need "variant
v of image i" and must agree on what a variant is: G(x, z) with z ~ N(0, I) drawn from
a numpy generator, batch-norm in inference mode.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def draw_noise(rng: np.random.Generator, count: int, noise_dim: int) -> np.ndarray:
    """``count`` noise vectors z ~ N(0, I), float32 (count, noise_dim)."""
    return rng.standard_normal((count, noise_dim), dtype=np.float32)


def generate(generator, images: np.ndarray, noise: np.ndarray, batch_size: int = 256,
             on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """G(images[i], noise[i]) for every i, in batches; float32 in [-1, 1], NHWC.

    Args:
        generator: the Keras generator (inputs ``[x, z]``).
        images: (n, 32, 32, 3) in [-1, 1].
        noise: (n, noise_dim).
        batch_size: images per call.
        on_batch: called with the number of images done after each batch (progress).
    """
    if len(images) != len(noise):
        raise ValueError(f"{len(images)} images but {len(noise)} noise vectors")
    out = np.empty(images.shape, dtype=np.float32)
    for start in range(0, len(images), batch_size):
        stop = min(start + batch_size, len(images))
        out[start:stop] = np.asarray(generator([images[start:stop], noise[start:stop]],
                                               training=False))
        if on_batch is not None:
            on_batch(stop)
    return out
