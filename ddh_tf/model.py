"""The DDH network (Lin, Li, Tang, IJCAI 2017) as a Keras functional model."""

from __future__ import annotations

import keras

from ddh_tf.layers import DivideAndEncode, LocallyConnected2D, keras1_he_uniform_limit

OUTPUT_NAMES = ("logits", "relaxed_codes")
# Keras 1 BatchNormalization defaults, which the original used (Keras 3: 0.99, 1e-3 too,
# but named here so that the choice does not depend on a library default).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
# (filters, kernel size) of the three conv / BN / ReLU / max-pool stages.
CONV_STAGES = ((20, 3), (40, 2), (60, 2))
LOCAL_FILTERS = 80
LOCAL_SIZE = 2


def _bn_relu(x, name: str):
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_ddh(num_classes: int, num_bits: int = 48, split_num: int = 4,
              name: str = "ddh") -> keras.Model:
    """Build DDH as the authors' ``build_DDN_net`` (layout in ddh_tf/README.md).

    images 32x32x3 -> conv 20@3x3 / 40@2x2 / 60@2x2 (valid, He-uniform), each BN -> ReLU
    -> 2x2 max-pool (pool3: 3x3x60) -> locally connected 80@2x2 -> BN -> ReLU (local4:
    2x2x80) -> concat[flatten(pool3), flatten(local4)] (860) -> Dense(num_bits * split_num)
    -> BN -> ReLU -> divide-and-encode (num_bits) -> BN -> tanh (relaxed codes) ->
    Dense(num_classes) (logits; the original's softmax is in the loss).

    Args:
        num_classes: identities in the training split.
        num_bits: code length in bits.
        split_num: units per bit entering divide-and-encode (original 4).
        name: model name.

    Returns:
        A model from (batch, 32, 32, 3) preprocessed images to [logits (num_classes),
        relaxed_codes (num_bits, in (-1, 1))], both float32.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_bits < 1:
        raise ValueError(f"num_bits must be >= 1, got {num_bits}")
    if split_num < 1:
        raise ValueError(f"split_num must be >= 1, got {split_num}")
    inputs = keras.Input((32, 32, 3), name="images")
    x = inputs
    for i, (filters, size) in enumerate(CONV_STAGES, start=1):
        x = keras.layers.Conv2D(filters, size, padding="valid", kernel_initializer="he_uniform",
                                name=f"conv{i}")(x)
        x = _bn_relu(x, f"conv{i}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)          # 15, 7, 3
    # Keras 1's he_uniform saw the 3-D kernel (4, 240, 80) as "no specific layout" and took
    # fan_in = sqrt(4 * 240 * 80); reproduce its bound (0.147, not sqrt(6 / 240) = 0.158).
    local_shape = ((int(x.shape[1]) - LOCAL_SIZE + 1) * (int(x.shape[2]) - LOCAL_SIZE + 1),
                   LOCAL_SIZE * LOCAL_SIZE * int(x.shape[3]), LOCAL_FILTERS)
    limit = keras1_he_uniform_limit(local_shape)
    local = LocallyConnected2D(
        LOCAL_FILTERS, LOCAL_SIZE, name="local4",
        kernel_initializer=keras.initializers.RandomUniform(-limit, limit))(x)
    local = _bn_relu(local, "local4")                                     # 2x2x80
    fused = keras.layers.Concatenate(name="fusion")([
        keras.layers.Flatten(name="pool3_flat")(x),
        keras.layers.Flatten(name="local4_flat")(local)])                # 540 + 320 = 860
    face = keras.layers.Dense(num_bits * split_num, name="face_feature")(fused)
    face = _bn_relu(face, "face_feature")
    h = DivideAndEncode(num_bits, split_num, name="divide_and_encode")(face)
    h = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name="hash_bn")(h)
    codes = keras.layers.Activation("tanh", name="hash_tanh")(h)
    logits = keras.layers.Dense(num_classes, name="logits", dtype="float32")(codes)
    codes = keras.layers.Activation("linear", dtype="float32", name="relaxed_codes")(codes)
    return keras.Model(inputs, [logits, codes], name=name)
