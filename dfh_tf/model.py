"""The DFH network: DCBH's two-scale backbone, a supervised feature layer (the teacher),
a hash layer (the student) and a classifier on each."""

from __future__ import annotations

import keras

from common.models.backbone import BN_EPSILON, BN_MOMENTUM, multiscale_backbone

OUTPUT_NAMES = ("logits", "relaxed_codes", "feature_logits", "hash_activations")


def build_dfh(num_classes: int, num_bits: int = 48, feature_units: int = 512,
              width_multiplier: float = 1.0, name: str = "dfh") -> keras.Model:
    """Build DFH as dfh_tf/README.md describes.

    images -> backbone (DCBH's, two-scale fusion) -> feature layer (Dense-BN-ReLU,
    ``feature_units``) -> feature classifier (the distillation teacher, trained by
    cross-entropy in every stage); feature layer -> hash layer (Dense ``num_bits`` -> BN:
    the pre-activations a; tanh: the relaxed codes h) -> code classifier (the student
    of the distillation; its logits are the run's reported accuracy).

    Args:
        num_classes: identities in the training split.
        num_bits: code length.
        feature_units: width of the feature layer.
        width_multiplier: backbone width (1.0 = DCBH's).
        name: model name.

    Returns:
        A model from (batch, 32, 32, 3) preprocessed images to [logits, relaxed_codes,
        feature_logits, hash_activations] (OUTPUT_NAMES), all float32.

    Example:
        >>> model = build_dfh(10, num_bits=12, width_multiplier=0.25)
        >>> [tuple(o.shape) for o in model.outputs]
        [(None, 10), (None, 12), (None, 10), (None, 12)]
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    for arg, value in (("num_bits", num_bits), ("feature_units", feature_units)):
        if value < 1:
            raise ValueError(f"{arg} must be >= 1, got {value}")
    inputs = keras.Input((32, 32, 3), name="images")
    fused = multiscale_backbone(inputs, width_multiplier)
    x = keras.layers.Dense(feature_units, use_bias=False, name="feature_dense")(fused)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name="feature_bn")(x)
    features = keras.layers.ReLU(name="features")(x)
    feature_logits = keras.layers.Dense(num_classes, name="feature_classifier",
                                        dtype="float32")(features)
    a = keras.layers.Dense(num_bits, use_bias=False, name="hash_dense")(features)
    a = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name="hash_bn")(a)
    relaxed = keras.layers.Activation("tanh", name="hash_tanh")(a)
    logits = keras.layers.Dense(num_classes, name="code_classifier", dtype="float32")(relaxed)
    linear = lambda t, n: keras.layers.Activation("linear", dtype="float32", name=n)(t)  # noqa: E731
    outputs = [linear(logits, "logits"), linear(relaxed, "relaxed_codes"),
               linear(feature_logits, "feature_logits"), linear(a, "hash_activations")]
    return keras.Model(inputs, outputs, name=name)
