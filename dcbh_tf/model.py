"""The DCBH network (the original FHNet) as a Keras functional model."""

from __future__ import annotations

import keras

from common.models.backbone import multiscale_backbone
from common.layers import BlockHash, CenterLoss

OUTPUT_NAMES = ("logits", "center_logits", "relaxed_codes", "features")


def build_dcbh(num_classes: int, num_bits: int = 48, code_length: int = 6,
               width_multiplier: float = 1.0, center_reduction: str = "sum",
               name: str = "dcbh") -> keras.Model:
    """Build DCBH: backbone -> dense feature -> block hashing -> two classifiers.

    Args:
        num_classes: identities in the training split.
        num_bits: code length in bits.
        code_length: units per bit block (the paper's "code length", 6).
        width_multiplier: backbone width (1.0 = original; smaller only for tests).
        center_reduction: "sum" (original) or "mean" center loss over the batch.
        name: model name.

    Returns:
        A model from (batch, 32, 32, 3) preprocessed images to
        [logits (num_classes), center_logits (num_classes), relaxed_codes (num_bits),
        features (num_bits * code_length)]. Its ``center_loss`` layer (identity on the
        features) holds the class centers, so they count among the trainable
        weights as in the original: 8,191,780 for 530 classes at 48 bits.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    inputs = keras.Input((32, 32, 3), name="images")
    fused = multiscale_backbone(inputs, width_multiplier)
    x = keras.layers.Dense(num_bits * code_length, kernel_initializer="glorot_uniform",
                           name="feature_dense")(fused)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name="feature_bn")(x)
    features = keras.layers.ReLU(name="feature_relu")(x)
    features = CenterLoss(num_classes, reduction=center_reduction, name="center_loss")(features)
    codes = BlockHash(num_bits, code_length, name="block_hash")(features)
    logits = keras.layers.Dense(num_classes, kernel_initializer="glorot_uniform",
                                name="logits", dtype="float32")(codes)
    center_logits = keras.layers.Dense(num_classes, kernel_initializer="glorot_uniform",
                                       name="center_logits", dtype="float32")(features)
    codes = keras.layers.Activation("linear", dtype="float32", name="relaxed_codes")(codes)
    features = keras.layers.Activation("linear", dtype="float32", name="features")(features)
    return keras.Model(inputs, [logits, center_logits, codes, features], name=name)
