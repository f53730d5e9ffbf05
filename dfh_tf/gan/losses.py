"""The GAN's losses as pure functions of tensors (numpy-checkable, no state).

* hinge loss (Lim & Ye 2017; SNGAN, Miyato et al. 2018), the usual partner of spectral
  normalisation: D minimises ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``,
  G minimises ``-mean(D(fake))``;
* the mode-seeking regulariser (MSGAN, Mao et al. CVPR 2019): two noises for the same
  source must give two different images, else G is punished; this keeps a conditional
  G from ignoring z. Normalisation chosen here (README): element means over the whole
  batch, ``mean|z1 - z2| / (mean|G(x, z1) - G(x, z2)| + eps)``, as MSGAN's reference
  code (``1 / (lz + eps)`` with ``lz = mean|G1 - G2| / mean|z1 - z2|``, up to where eps
  sits). Images are in [-1, 1].
"""

from __future__ import annotations

import tensorflow as tf

MODE_SEEKING_EPSILON = 1e-5


def d_hinge_loss(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """The discriminator's hinge loss: real pairs pushed above +1, fake pairs below -1."""
    return (tf.reduce_mean(tf.nn.relu(1.0 - real_logits))
            + tf.reduce_mean(tf.nn.relu(1.0 + fake_logits)))


def g_hinge_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """The generator's hinge loss: raise D's logit of the fake pairs."""
    return -tf.reduce_mean(fake_logits)


def image_distance(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference over every element (the images' L1 per element)."""
    return tf.reduce_mean(tf.abs(a - b))


def mode_seeking_term(fake1: tf.Tensor, fake2: tf.Tensor, z1: tf.Tensor, z2: tf.Tensor,
                      epsilon: float = MODE_SEEKING_EPSILON) -> tf.Tensor:
    """``mean|z1 - z2| / (mean|fake1 - fake2| + epsilon)``; small when z changes the image.

    Args:
        fake1, fake2: G(x, z1) and G(x, z2) for the same sources x, any equal shapes.
        z1, z2: the two noise batches.
        epsilon: keeps the ratio finite for identical images.
    """
    return image_distance(z1, z2) / (image_distance(fake1, fake2) + epsilon)


def identity_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Mean sparse softmax cross-entropy (C's loss on real images, G's identity term)."""
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits))
