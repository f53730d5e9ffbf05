"""The DDCH network: shared two-scale backbone, feature layer, multi-layer hash function,
discrete hashing module, classifiers on the codes and on the features."""

from __future__ import annotations

import keras

from common.models.backbone import multiscale_backbone
from common.layers import CenterLoss, StraightThroughSign

OUTPUT_NAMES = ("logits", "feature_logits", "relaxed_codes", "codes", "features")


def _dense_bn_relu(x, units: int, name: str):
    x = keras.layers.Dense(units, use_bias=False, kernel_initializer="glorot_uniform",
                           name=f"{name}_dense")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_ddch(num_classes: int, num_bits: int = 48, feature_units: int = 512,
               hash_hidden_units: int = 512, width_multiplier: float = 1.0,
               center_reduction: str = "sum", clip_gradient: bool = False,
               name: str = "ddch") -> keras.Model:
    """Build DDCH (Fu, Wang, Tang, PRCV 2021) as ddch_tf/README.md describes.

    images -> backbone (DCBH's, with its two-scale fusion) -> feature layer
    (Dense-BN-ReLU, ``feature_units``; feature centers) -> hash function
    (Dense-BN-ReLU ``hash_hidden_units`` -> Dense ``num_bits`` -> BN -> tanh: the relaxed
    codes) -> discrete hashing module (straight-through sign: +-1 codes in the forward
    pass; code centers) -> classifier on the codes; a second classifier on the features.

    Args:
        num_classes: identities in the training split.
        num_bits: code length in bits.
        feature_units: width of the feature layer the feature centers live in.
        hash_hidden_units: hidden width of the two-layer hash function.
        width_multiplier: backbone width (1.0 = DCBH's).
        center_reduction: "sum" or "mean" over the batch, for both center losses.
        clip_gradient: the straight-through gradient only where |relaxed| <= 1 (tanh
            output never exceeds 1, so this only matters for custom heads).
        name: model name.

    Returns:
        A model from (batch, 32, 32, 3) preprocessed images to
        [logits, feature_logits, relaxed_codes, codes, features]. Its layers
        ``feature_center`` and ``code_center`` hold the two sets of centers.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    for arg, value in (("num_bits", num_bits), ("feature_units", feature_units),
                       ("hash_hidden_units", hash_hidden_units)):
        if value < 1:
            raise ValueError(f"{arg} must be >= 1, got {value}")
    inputs = keras.Input((32, 32, 3), name="images")
    fused = multiscale_backbone(inputs, width_multiplier)
    features = _dense_bn_relu(fused, feature_units, "feature")
    features = CenterLoss(num_classes, reduction=center_reduction, name="feature_center")(features)
    h = _dense_bn_relu(features, hash_hidden_units, "hash_hidden")
    h = keras.layers.Dense(num_bits, use_bias=False, kernel_initializer="glorot_uniform",
                           name="hash_dense")(h)
    h = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name="hash_bn")(h)
    relaxed = keras.layers.Activation("tanh", name="hash_tanh")(h)
    codes = StraightThroughSign(clip_gradient=clip_gradient, name="discrete_hash")(relaxed)
    codes = CenterLoss(num_classes, reduction=center_reduction, name="code_center")(codes)
    logits = keras.layers.Dense(num_classes, kernel_initializer="glorot_uniform",
                                name="logits", dtype="float32")(codes)
    feature_logits = keras.layers.Dense(num_classes, kernel_initializer="glorot_uniform",
                                        name="feature_logits", dtype="float32")(features)
    outputs = [
        logits, feature_logits,
        keras.layers.Activation("linear", dtype="float32", name="relaxed_codes")(relaxed),
        keras.layers.Activation("linear", dtype="float32", name="codes")(codes),
        keras.layers.Activation("linear", dtype="float32", name="features")(features),
    ]
    return keras.Model(inputs, outputs, name=name)
