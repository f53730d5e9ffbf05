"""The three networks of the GAN: generator G(x, z), pair discriminator D(x, x'), classifier C.

Why these shapes (README, "Design"): G is a small U-Net that sees a face and a noise
vector, so that it can only *edit* the face (DAGAN); D judges a PAIR (source,
candidate) so that it can tell "another picture of this person" from "a copy" or
"someone else"; C is an identity classifier whose cross-entropy on G's output keeps the
identity. All three are plain Keras functional models in float32; widths scale with
``width`` so tests run at a quarter of the size.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

IMAGE_SHAPE = (32, 32, 3)
# Channels of the three resolutions (16x16, 8x8, 4x4) at width 1. Smaller than DAGAN's
# 64/128/256: a 4,000-image epoch must train in seconds on two CPU cores (README).
GENERATOR_FILTERS = (32, 64, 128)
DISCRIMINATOR_FILTERS = (32, 64, 128)
CLASSIFIER_FILTERS = (16, 32, 64)
NOISE_CHANNELS = 16  # z is projected to 4x4x16 (bottleneck) and 8x8x8 (second injection)
LEAKY_SLOPE = 0.2


def _channels(base: int, width: float) -> int:
    """``base * width`` rounded, at least 4 (a zero-width layer would not build)."""
    return max(4, int(round(base * width)))


def _conv_block(x, filters: int, strides: int, name: str, batch_norm: bool = True):
    x = layers.Conv2D(filters, 3 if strides == 1 else 4, strides=strides, padding="same",
                      use_bias=not batch_norm, name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(x)


class EditOutput(layers.Layer):
    """``tanh(atanh(x) + limit * tanh(edit))``: the image, edited in tanh's pre-activation space.

    Why: with ``edit = 0`` the output is the input, so G starts from sharp faces of the
    right identity and only has to learn the change (D forbids plain copies); the
    output stays in (-1, 1) without clipping. ``limit`` bounds the change (0.5: at most
    about +-60 of 255 levels at mid-grey, less towards black and white), enough for
    lighting and colour, too little to paint a second face over the first.
    """

    PIXEL_LIMIT = 0.999  # atanh(0.999) = 3.8: finite for saturated pixels

    def __init__(self, limit: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.limit = limit

    def call(self, inputs):
        x, edit = inputs
        base = ops.arctanh(ops.clip(x, -self.PIXEL_LIMIT, self.PIXEL_LIMIT))
        return ops.tanh(base + self.limit * ops.tanh(edit))

    def get_config(self):
        return {**super().get_config(), "limit": self.limit}


class AffineWarp(layers.Layer):
    """Resample images through per-image 2x3 affine maps (bilinear, edges clamped).

    ``theta`` (b, 6) maps output coordinates to input coordinates, both in [-1, 1]
    (x right, y down): ``[a, b, tx, c, d, ty]``, identity ``[1, 0, 0, 0, 1, 0]``.
    Differentiable in the images and in theta (TensorFlow's projective-transform op
    has no gradient for the transform, hence this sampler).
    """

    def call(self, inputs):
        images, theta = inputs
        images = tf.convert_to_tensor(images)
        batch = tf.shape(images)[0]
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        ys, xs = tf.meshgrid(tf.linspace(-1.0, 1.0, height), tf.linspace(-1.0, 1.0, width),
                             indexing="ij")
        grid = tf.stack([tf.reshape(xs, [-1]), tf.reshape(ys, [-1]),
                         tf.ones([height * width])])                      # (3, HW)
        source = tf.einsum("bij,jk->bik", tf.reshape(theta, [-1, 2, 3]), grid)  # (b, 2, HW)
        sx = (source[:, 0] + 1.0) * (width - 1) / 2.0
        sy = (source[:, 1] + 1.0) * (height - 1) / 2.0
        sx = tf.clip_by_value(sx, 0.0, width - 1.0)
        sy = tf.clip_by_value(sy, 0.0, height - 1.0)
        x0, y0 = tf.floor(sx), tf.floor(sy)
        x1 = tf.minimum(x0 + 1.0, width - 1.0)
        y1 = tf.minimum(y0 + 1.0, height - 1.0)
        wx, wy = (sx - x0)[..., None], (sy - y0)[..., None]
        flat = tf.reshape(images, [batch, height * width, channels])

        def at(yy, xx):
            index = tf.cast(yy, tf.int32) * width + tf.cast(xx, tf.int32)
            return tf.gather(flat, index, batch_dims=1)

        top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
        bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
        return tf.reshape(top * (1.0 - wy) + bottom * wy, [batch, height, width, channels])


class WarpParameters(layers.Layer):
    """z -> an affine map near the identity: identity + ``limit * tanh(raw)``.

    The raw head starts at zero (G's first warps are the identity); ``limit`` bounds
    the warp (0.25: shifts up to 4 pixels, scale and shear up to 25 %), so a warp
    moves and turns the face but cannot push it out of the crop.
    """

    IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)

    def __init__(self, limit: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.limit = limit

    def call(self, raw):
        return ops.convert_to_tensor(self.IDENTITY) + self.limit * ops.tanh(raw)

    def get_config(self):
        return {**super().get_config(), "limit": self.limit}


def build_generator(noise_dim: int = 64, width: float = 1.0) -> keras.Model:
    """G(x, z): a face in [-1, 1] and a noise vector in, an edited face in [-1, 1] out.

    Two stages (README, "Design", says why):

    1. Warp: a small MLP maps z to an affine map near the identity
       (:class:`WarpParameters`) and x is resampled through it (:class:`AffineWarp`):
       pose changes (shift, scale, roll, shear) that keep every detail sharp.
    2. Edit: a U-Net on the warped face. Encoder: stride-2 convolutions 32 -> 16 -> 8
       -> 4 (32/64/128 channels x ``width``, batch norm and LeakyReLU after all but
       the first). z is projected by Dense layers to 4x4 and 8x8 maps concatenated at
       the bottleneck and at the first decoder stage. Decoder: nearest upsampling + 3x3
       convolutions with skip connections at 8x8 and 16x16; the edit is predicted at
       16x16, upsampled bilinearly, bounded, and applied in tanh's pre-activation space
       (:class:`EditOutput`): lighting, colour and shading, never a repainted face.

    G starts as the identity map (zero warp head, edit near 0); copying is no way out,
    because D's real pairs are never two copies of one picture.

    Args:
        noise_dim: length of z (z ~ N(0, I)).
        width: channel multiplier (1.0: 32/64/128).

    Returns:
        A model with inputs ``[x (b, 32, 32, 3), z (b, noise_dim)]``, output (b, 32, 32, 3).
    """
    if noise_dim < 1:
        raise ValueError(f"noise_dim must be >= 1, got {noise_dim}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    f1, f2, f3 = (_channels(f, width) for f in GENERATOR_FILTERS)
    nz = _channels(NOISE_CHANNELS, width)
    x_in = keras.Input(IMAGE_SHAPE, name="image")
    z_in = keras.Input((noise_dim,), name="noise")
    hz = layers.Dense(max(8, nz * 2), name="warp_hidden")(z_in)
    hz = layers.LeakyReLU(LEAKY_SLOPE, name="warp_act")(hz)
    theta = WarpParameters(name="warp_theta")(
        layers.Dense(6, kernel_initializer="zeros", name="warp_raw")(hz))
    warped = AffineWarp(name="warp")([x_in, theta])                   # pose: a moved face
    e1 = _conv_block(warped, f1, 2, "enc1", batch_norm=False)      # 16x16
    e2 = _conv_block(e1, f2, 2, "enc2")                               # 8x8
    e3 = _conv_block(e2, f3, 2, "enc3")                               # 4x4
    z4 = layers.Reshape((4, 4, nz), name="z4_map")(
        layers.Dense(4 * 4 * nz, name="z4_dense")(z_in))
    z8 = layers.Reshape((8, 8, max(4, nz // 2)), name="z8_map")(
        layers.Dense(8 * 8 * max(4, nz // 2), name="z8_dense")(z_in))
    h = layers.Concatenate(name="bottleneck_in")([e3, z4])
    h = _conv_block(h, f3, 1, "bottleneck")                           # 4x4
    h = layers.UpSampling2D(name="up8")(h)
    h = layers.Concatenate(name="skip8")([h, e2, z8])
    h = _conv_block(h, f2, 1, "dec8")                                 # 8x8
    h = layers.UpSampling2D(name="up16")(h)
    h = layers.Concatenate(name="skip16")([h, e1])
    h = _conv_block(h, f1, 1, "dec16")                                # 16x16
    edit = layers.Conv2D(3, 3, padding="same", name="to_edit",
                         kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3))(h)
    edit = layers.UpSampling2D(interpolation="bilinear", name="edit_up32")(edit)
    out = EditOutput(name="edited")([warped, edit])                   # appearance
    return keras.Model([x_in, z_in], out, name="generator")


def build_discriminator(width: float = 1.0) -> keras.Model:
    """D(x, x'): a (source, candidate) pair, channel-concatenated, in; one logit out.

    Spectral normalisation on every layer (SNGAN, Miyato et al. 2018) bounds D's
    Lipschitz constant, the usual partner of the hinge loss; no batch norm, so a batch
    of real pairs and a batch of fake pairs are judged independently.

    Args:
        width: channel multiplier (1.0: 32/64/128 channels at 16/8/4 pixels).

    Returns:
        A model with input ``(b, 32, 32, 6)`` (source channels first, then candidate)
        and output ``(b, 1)`` logits (real pair: high).
    """
    f1, f2, f3 = (_channels(f, width) for f in DISCRIMINATOR_FILTERS)
    pair = keras.Input((32, 32, 6), name="pair")
    h = pair
    for i, filters in enumerate((f1, f2, f3), start=1):
        h = layers.SpectralNormalization(
            layers.Conv2D(filters, 4, strides=2, padding="same", name=f"d{i}_kernel"),
            name=f"d{i}_conv")(h)
        h = layers.LeakyReLU(LEAKY_SLOPE, name=f"d{i}_act")(h)
    h = layers.SpectralNormalization(
        layers.Conv2D(f3, 3, padding="same", name="d4_kernel"), name="d4_conv")(h)
    h = layers.LeakyReLU(LEAKY_SLOPE, name="d4_act")(h)
    h = layers.Flatten(name="flatten")(h)
    logit = layers.SpectralNormalization(layers.Dense(1, name="logit_dense"), name="logit")(h)
    return keras.Model(pair, logit, name="discriminator")


def build_identity_classifier(num_classes: int, width: float = 1.0,
                              name: str = "identity_classifier") -> keras.Model:
    """C(x): a face in [-1, 1] in, identity logits out.

    Three stride-2 convolutions with batch norm (it learns several times faster than
    without, and G's identity term is useless until C knows the identities), global
    average pooling, a dense layer. The training step calls C once on the real and the
    generated batch together, so its batch statistics are those of the mixed batch.

    Args:
        num_classes: number of identities (largest label + 1).
        width: channel multiplier (1.0: 16/32/64).
        name: model name.

    Returns:
        A model with input ``(b, 32, 32, 3)`` and output ``(b, num_classes)`` logits.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    f1, f2, f3 = (_channels(f, width) for f in CLASSIFIER_FILTERS)
    x_in = keras.Input(IMAGE_SHAPE, name="image")
    h = _conv_block(x_in, f1, 2, "c1")        # 16x16
    h = _conv_block(h, f2, 2, "c2")           # 8x8
    h = _conv_block(h, f3, 2, "c3")           # 4x4
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    logits = layers.Dense(num_classes, name="logits")(h)
    return keras.Model(x_in, logits, name=name)
