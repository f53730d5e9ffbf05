"""The DDH network (Lin, Li, Tang, IJCAI 2017) as a Keras functional model."""

from __future__ import annotations

import keras

from ddh_tf.layers import DivideAndEncode, LocallyConnected2D

OUTPUT_NAMES = ("logits", "relaxed_codes")
# Keras 1 BatchNormalization defaults, which the original used.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


def _bn_relu(x, name: str):
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_ddh(num_classes: int, num_bits: int = 48, split_num: int = 4,
              name: str = "ddh") -> keras.Model:
    """Build DDH: three conv/pool stages, a locally connected layer, two-scale fusion,
    divide-and-encode, tanh codes, softmax classifier.

    Args:
        num_classes: identities in the training split.
        num_bits: code length in bits.
        split_num: units per bit entering divide-and-encode (original 4).
        name: model name.

    Returns:
        A model from (batch, 32, 32, 3) preprocessed images to [logits (num_classes),
        relaxed_codes (num_bits, tanh)].
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_bits < 1 or split_num < 1:
        raise ValueError(f"num_bits and split_num must be >= 1, got {num_bits}, {split_num}")
    inputs = keras.Input((32, 32, 3), name="images")
    x = inputs
    for i, (filters, size) in enumerate(((20, 3), (40, 2), (60, 2)), start=1):
        x = keras.layers.Conv2D(filters, size, padding="valid", kernel_initializer="he_uniform",
                                name=f"conv{i}")(x)
        x = _bn_relu(x, f"conv{i}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)          # 15, 7, 3
    local = LocallyConnected2D(80, 2, name="local4")(x)                   # 2x2x80
    local = _bn_relu(local, "local4")
    fused = keras.layers.Concatenate(name="fusion")([
        keras.layers.Flatten(name="pool3_flat")(x), keras.layers.Flatten(name="local4_flat")(local)])
    face = keras.layers.Dense(num_bits * split_num, name="face_feature")(fused)
    face = _bn_relu(face, "face_feature")
    h = DivideAndEncode(num_bits, split_num, name="divide_and_encode")(face)
    h = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name="hash_bn")(h)
    codes = keras.layers.Activation("tanh", name="hash_tanh")(h)
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(codes)
    codes = keras.layers.Activation("linear", dtype="float32", name="relaxed_codes")(codes)
    return keras.Model(inputs, [logits, codes], name=name)
