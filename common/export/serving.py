"""The serving graph of an export: raw uint8 pixels in, binary codes out.

    images (N, 32, 32, 3) uint8
      -> float32, clip((x - mean) * (0.1 / (std + 1e-5)), -1, 1)   (the original's preprocessing)
      -> model in inference mode -> relaxed codes (float32)
      -> codes  int8  +-1, sign with 0 -> +1
      -> packed uint8 (N, ceil(bits / 8)), bit b of the code is bit (b % 8) of byte b // 8,
         least significant bit first (numpy ``packbits(bitorder="little")``; faiss's binary
         indexes read this layout), bit = 1 where the code is +1; padding bits are 0.

A second signature, ``serving_any_size``, takes uint8 (N, H, W, 3) and resizes it to 32x32
(bilinear with antialiasing, rounded back to uint8) before the same path. It is a plain
resize: no face detection, alignment or cropping.

Input types. A ``tf.Tensor`` of another dtype is refused by TensorFlow at the call
(``InvalidArgumentError``: "expected to be a uint8 tensor"); one of another shape is refused
by a check inside the graph (``InvalidArgumentError``: "images must be uint8 (N, 32, 32, 3)
...; got shape"), which TensorFlow's own spec check does not guarantee for tensors. A *numpy*
array of another shape is refused by TensorFlow (``TypeError``: "Can not cast"), but one of
another dtype is converted by TensorFlow's Python client with ``tf.constant(x, dtype=uint8)``
semantics before the graph runs (0.5 -> 0, -1 -> 255, 300 -> 44): no SavedModel can see or
refuse that. Hence: call the signature with ``tf.constant(images)`` (which keeps the numpy
dtype, so floats are refused), or use :func:`common.export.loader.load_encoder`, which never casts.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from common.data.preprocess import SCALE, STD_EPSILON, Normalization

SIGNATURE = "serving_default"
ANY_SIZE_SIGNATURE = "serving_any_size"
IMAGE_SHAPE = (32, 32, 3)


def pack_codes(codes: tf.Tensor) -> tf.Tensor:
    """+-1 codes (N, bits) -> uint8 (N, ceil(bits/8)), least significant bit first."""
    bits = tf.cast(codes > 0, tf.int32)
    num_bits = bits.shape[-1]
    pad = (-num_bits) % 8
    if pad:
        bits = tf.pad(bits, [[0, 0], [0, pad]])
    groups = tf.reshape(bits, [-1, (num_bits + pad) // 8, 8])
    weights = tf.constant([1 << i for i in range(8)], tf.int32)
    return tf.cast(tf.reduce_sum(groups * weights, axis=-1), tf.uint8)


def pack_codes_numpy(codes: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`pack_codes` (for indexes built outside TensorFlow)."""
    return np.packbits(np.asarray(codes) > 0, axis=1, bitorder="little")


def _encode_graph(model: keras.Model, normalization: Normalization,
                  codes_output: int) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """uint8 (N, 32, 32, 3) -> outputs; shared by both signatures so they cannot drift."""
    mean = tf.constant(normalization.mean, tf.float32)
    scale = tf.constant(np.float32(SCALE / (normalization.std + STD_EPSILON)), tf.float32)

    def encode(images: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.clip_by_value((tf.cast(images, tf.float32) - mean) * scale, -1.0, 1.0)
        # An empty batch makes the CPU kernels fail ("Incompatible shapes: [4] vs.
        # [0,32,32,3]"): run one blank image instead and return none (inference is per image).
        n = tf.shape(x)[0]
        x = tf.cond(n > 0, lambda: x, lambda: tf.zeros([1, *IMAGE_SHAPE], tf.float32))
        outputs = model(x, training=False)
        relaxed = tf.cast(outputs[codes_output], tf.float32)[:n]
        codes = tf.where(relaxed >= 0, tf.ones_like(relaxed, tf.int8),
                         -tf.ones_like(relaxed, tf.int8))
        return {"codes": codes, "packed": pack_codes(codes), "relaxed": relaxed}

    return encode


def _require_shape(images: tf.Tensor, height: int | None) -> tf.Tensor:
    """``images`` once the graph has checked they are (N, height, height, 3) (any H, W >= 1
    for None).

    Why: the signature's input spec is not enough. A ``tf.Tensor`` of another shape is
    let through by TensorFlow's flat-signature fallback: a 64x64 batch was encoded
    silently, a (32, 32, 3) image without batch axis aborted the whole process inside
    the convolution. This check runs first, whatever the caller.
    """
    shape = tf.shape(images)
    dims = tf.concat([shape, tf.zeros([4], tf.int32)], 0)[:4]  # rank < 4 padded, checked below
    conditions = [tf.equal(tf.size(shape), 4), tf.equal(dims[3], 3)]
    if height is None:
        conditions += [tf.greater(dims[1], 0), tf.greater(dims[2], 0)]
        want = "(N, H, W, 3)"
    else:
        conditions += [tf.equal(dims[1], height), tf.equal(dims[2], height)]
        want = f"(N, {height}, {height}, 3)"
    check = tf.debugging.Assert(
        tf.reduce_all(tf.stack(conditions)),
        [f"images must be uint8 {want} raw RGB pixels (NHWC); got shape", shape], summarize=8)
    with tf.control_dependencies([check]):
        return tf.identity(images)


def resize_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, 32, 32, 3): bilinear with antialiasing, rounded.

    A plain resize (no face detection or cropping); ``serving_any_size`` applies exactly this.
    """
    resized = tf.image.resize(tf.cast(images, tf.float32), IMAGE_SHAPE[:2], method="bilinear",
                              antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def serving_function(model: keras.Model, normalization: Normalization, codes_output: int):
    """The tf.function behind the ``serving_default`` signature (uint8 (N, 32, 32, 3))."""
    encode = _encode_graph(model, normalization, codes_output)

    @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.uint8, name="images")])
    def serve(images):
        return encode(_require_shape(images, IMAGE_SHAPE[0]))

    return serve


def any_size_serving_function(model: keras.Model, normalization: Normalization,
                              codes_output: int):
    """The tf.function behind ``serving_any_size`` (uint8 (N, H, W, 3), resized to 32x32)."""
    encode = _encode_graph(model, normalization, codes_output)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_any_size(images):
        return encode(resize_images(_require_shape(images, None)))

    return serve_any_size
