"""The DDAH network (PRICAI 2019) as Keras functional models: attention branch + shared trunk.

The original (``deephashface/DDAH`` model.py) is one ``nn.Module`` whose ``forward`` runs
the trunk twice: on the spatially attended image (pass a) and on the raw image (pass b),
with the same weights. Here the trunk is one functional ``keras.Model`` ("trunk") called
twice inside the outer model, so weight sharing is structural: there is one set of trunk
variables. Layout, shapes and weight counts: ddah_tf/README.md.
"""

from __future__ import annotations

import keras

from common.models.batch_norm import frozen_moving_statistics
from ddah_tf.layers import ChannelsFirstFlatten, DDAHChannelAttention, DDAHSpatialAttention
from ddah_tf.torch_defaults import batch_norm, xavier_normal

# Model outputs, by position. The original's forward returns (hash_a, cls_a, hash_b, cls_b);
# the project's convention puts "logits" and "relaxed_codes" (pass a) first.
OUTPUT_NAMES = ("logits", "relaxed_codes", "raw_logits", "raw_relaxed_codes")
INPUT_SHAPE = (32, 32, 3)     # the original's too: utils.py reshapes every row to (3, 32, 32)
ATTENTION_LAYER = "spatial_attention"
TRUNK_LAYER = "trunk"
# Which passes update the trunk's moving batch-norm statistics in training.
BATCH_NORM_STATISTICS = ("attended", "both_passes")

# Original widths (width_multiplier 1).
ATTENTION_FILTERS = 32
CONV_STAGES = ((32, 3), (64, 2), (128, 2))   # (filters, kernel): conv -> BN -> ReLU -> pool 2
CONV4 = (256, 2)                             # conv -> BN -> ReLU, no pool
CHANNEL_HIDDEN = 512
FACE_FEATURES = 1024                         # the original's FACE_FEATURES


def scaled(width: int, multiplier: float) -> int:
    """A width at ``multiplier`` (>= 1)."""
    return max(1, int(round(width * multiplier)))


def attention_filters(width_multiplier: float) -> int:
    """The spatial attention's first width at ``width_multiplier``: even, >= 2."""
    return max(2, 2 * int(round(ATTENTION_FILTERS / 2 * width_multiplier)))


def check_sizes(num_classes: int, num_bits: int, width_multiplier: float) -> None:
    """ValueError naming the first size a DDAH-style network cannot be built with."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_bits < 1:
        raise ValueError(f"num_bits must be >= 1, got {num_bits}")
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")


def conv_bn_relu(x, filters: int, size: int, name: str):
    """conv (valid, Xavier-normal) -> BN (PyTorch's settings) -> ReLU."""
    x = keras.layers.Conv2D(filters, size, padding="valid", kernel_initializer=xavier_normal(),
                            name=f"{name}_conv")(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_trunk(num_classes: int, num_bits: int = 48, width_multiplier: float = 1.0,
                min_max_epsilon: float = 0.0, name: str = TRUNK_LAYER) -> keras.Model:
    """The shared trunk: image -> [logits, hash], the original's pass after the attention.

    ``features`` + ``conv4`` (features_3, features_4), the channel attentions
    ``global_avgpooling_3`` / ``_4``, ``face_features_layer``, ``hash_layer`` and
    ``classifier``. At width 1 and 32x32x3 input::

        conv 32 @3x3 -> BN -> ReLU -> maxpool 2     15x15x32
        conv 64 @2x2 -> BN -> ReLU -> maxpool 2     7x7x64
        conv 128 @2x2 -> BN -> ReLU -> maxpool 2    3x3x128   features_3
        conv 256 @2x2 -> BN -> ReLU                 2x2x256   features_4
        channel attention (1152 -> 512 -> 128) on features_3, (1024 -> 512 -> 256) on features_4
        concat[channel-major flatten: 1152, 1024] = 2176
        Dense 1024 -> BN -> ReLU                    face features
        Dense bits -> BN                            hash (real valued) = relaxed codes
        tanh -> Dense num_classes                   logits (the original's LogSoftmax is
                                                    in the loss: NLL(log_softmax) = CE)

    Args:
        num_classes: identities in the training split.
        num_bits: code length.
        width_multiplier: scales every width (conv filters, MLP hidden, face features);
            1.0 is the original, smaller values only for fast tests.
        min_max_epsilon: epsilon of the channel weights' min-max normalisation (original 0).
        name: model name.
    """
    inputs = keras.Input(INPUT_SHAPE, name="trunk_images")
    x = inputs
    for i, (filters, size) in enumerate(CONV_STAGES, start=1):
        x = conv_bn_relu(x, scaled(filters, width_multiplier), size, f"conv{i}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)             # 15, 7, 3
    features_3 = x
    features_4 = conv_bn_relu(features_3, scaled(CONV4[0], width_multiplier), CONV4[1],
                               "conv4")                                    # 2x2
    hidden = scaled(CHANNEL_HIDDEN, width_multiplier)
    attended_3 = DDAHChannelAttention(hidden, min_max_epsilon,
                                      name="channel_attention_3")(features_3)
    attended_4 = DDAHChannelAttention(hidden, min_max_epsilon,
                                      name="channel_attention_4")(features_4)
    fused = keras.layers.Concatenate(name="fusion")([
        ChannelsFirstFlatten(name="flatten_3")(attended_3),
        ChannelsFirstFlatten(name="flatten_4")(attended_4)])
    face = keras.layers.Dense(scaled(FACE_FEATURES, width_multiplier),
                              kernel_initializer=xavier_normal(), name="face_features")(fused)
    face = batch_norm("face_features_bn")(face)
    face = keras.layers.ReLU(name="face_features_relu")(face)
    hashed = keras.layers.Dense(num_bits, kernel_initializer=xavier_normal(),
                                name="hash")(face)
    hashed = batch_norm("hash_bn")(hashed)
    squashed = keras.layers.Activation("tanh", name="classifier_tanh")(hashed)
    logits = keras.layers.Dense(num_classes, kernel_initializer=xavier_normal(),
                                name="classifier")(squashed)
    return keras.Model(inputs, [logits, hashed], name=name)


def build_ddah(num_classes: int, num_bits: int = 48, width_multiplier: float = 1.0,
               unused_bn3: bool = False, min_max_epsilon: float = 0.0,
               name: str = "ddah") -> keras.Model:
    """Build DDAH: spatial attention + a trunk run on the attended and on the raw image.

    images -> ``spatial_attention`` (:class:`DDAHSpatialAttention`) -> attended images;
    pass a = trunk(attended), pass b = trunk(images), one trunk (:func:`build_trunk`).

    Trainable weights at 530 classes, 48 bits, width 1: 3,948,899 (155,873 attention +
    3,793,026 trunk); 3,948,931 with ``unused_bn3=True`` (the public model, whose
    ``bn3`` is defined but never applied). Hand count: tests/ddah_tf/test_model.py.

    Args:
        num_classes: identities in the training split (FaceScrub in the original: 530).
        num_bits: code length (original 48).
        width_multiplier: scales all widths (1.0 = original; small only for tests). The
            attention's first width is rounded to an even number (>= 2).
        unused_bn3: create the original's unused ``bn3`` (weights, no effect on outputs).
        min_max_epsilon: epsilon of all three min-max normalisations (original: none, 0).
        name: model name.

    Returns:
        A model from (batch, 32, 32, 3) preprocessed images to [logits, relaxed_codes,
        raw_logits, raw_relaxed_codes] (float32): pass a's classifier logits and hash-layer
        output (real valued; its sign is the code), then pass b's.
    """
    check_sizes(num_classes, num_bits, width_multiplier)
    images = keras.Input(INPUT_SHAPE, name="images")
    attended = DDAHSpatialAttention(attention_filters(width_multiplier), unused_bn3=unused_bn3,
                                    epsilon=min_max_epsilon, name=ATTENTION_LAYER)(images)
    trunk = build_trunk(num_classes, num_bits, width_multiplier, min_max_epsilon)
    logits_a, hash_a = trunk(attended)
    logits_b, hash_b = trunk(images)
    outputs = [keras.layers.Activation("linear", dtype="float32", name=output_name)(tensor)
               for output_name, tensor in zip(OUTPUT_NAMES, (logits_a, hash_a, logits_b, hash_b))]
    return keras.Model(images, outputs, name=name)


def attended_pass_model(model: keras.Model) -> keras.Model:
    """The inference part of a DDAH model: images -> [logits, relaxed_codes] of pass a only.

    The original's codes are sign(pass a's hash); pass b is needed only for training.
    The returned model shares the variables of ``model``.
    """
    return keras.Model(model.input, [model.get_layer(OUTPUT_NAMES[0]).output,
                                      model.get_layer(OUTPUT_NAMES[1]).output],
                       name=f"{model.name}_attended_pass")


def two_pass_outputs(model: keras.Model, images):
    """``model(images, training=True)`` of a two-pass model (DDAH's layout: the
    ``spatial_attention`` layer, then one ``trunk`` on the attended and on the raw image),
    with pass b's batch-norm layers leaving the moving statistics to pass a.

    Same outputs, same order (logits_a, hash_a, logits_b, hash_b), float32: both passes
    still normalise with their own batch's statistics, as in training; only the moving
    averages, which inference uses, see the attended images alone.
    """
    trunk = model.get_layer(TRUNK_LAYER)
    attended = model.get_layer(ATTENTION_LAYER)(images, training=True)
    logits_a, hash_a = trunk(attended, training=True)
    with frozen_moving_statistics(trunk):
        logits_b, hash_b = trunk(images, training=True)
    return [keras.ops.cast(t, "float32") for t in (logits_a, hash_a, logits_b, hash_b)]
