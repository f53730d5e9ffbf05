"""The DAGH network: DDAH's attention parts arranged as a cascade, a discrete hash layer and
an identity head on the binary codes. Choices and their reasons: dagh_tf/README.md."""

from __future__ import annotations

from typing import Any

import keras

from dagh_tf.layers import DiscreteHash, DiscreteIdentityHead, SpatialGate
from ddah_tf.layers import ChannelsFirstFlatten, DDAHChannelAttention, DDAHSpatialAttention
from ddah_tf.model import (ATTENTION_LAYER, CHANNEL_HIDDEN, CONV4, CONV_STAGES, FACE_FEATURES,
                           INPUT_SHAPE, OUTPUT_NAMES as TWO_PASS_OUTPUT_NAMES, TRUNK_LAYER,
                           attention_filters, check_sizes, conv_bn_relu, scaled)
from ddah_tf.torch_defaults import batch_norm, xavier_normal

OUTPUT_NAMES = ("logits", "relaxed_codes")
ATTENTIONS = ("cascade", "parallel")        # parallel: DDAH's layout (the ablation)
HASH_LAYERS = ("discrete", "tanh")          # tanh: no discrete layer (the ablation)
IDENTITY_HEADS = ("discrete", "softmax")    # softmax: a dense classifier (the ablation)
PASSES = (1, 2)                             # 2: DDAH's attended and raw passes (a variant)


def build_dagh(num_classes: int, num_bits: int = 48, width_multiplier: float = 1.0,
               attention: str = "cascade", hash_layer: str = "discrete",
               identity_head: str = "discrete", scale: float = 16.0,
               backward: str = "identity", gate_kernel: int = 3,
               min_max_epsilon: float = 0.0, passes: int = 1,
               name: str = "dagh") -> keras.Model:
    """Build DAGH. At width 1 and 32x32x3 input (``attention="cascade"``)::

        images -> DDAH's spatial attention (encoder-decoder mask, min-max) -> attended image
        conv 32 @3x3 / 64 @2x2 / 128 @2x2, each BN -> ReLU -> maxpool 2     3x3x128
        stage 3: channel attention (DDAH's MLP, min-max) -> spatial gate   refined_3
        conv 256 @2x2 -> BN -> ReLU on refined_3                            2x2x256
        stage 4: channel attention -> spatial gate                         refined_4
        concat[channel-major flatten of refined_3, refined_4] = 2176
        Dense 1024 -> BN -> ReLU -> Dense bits -> BN = h (relaxed codes; sign(h) is the code)
        discrete hash layer b = sign(h) -> identity head (binary centers) = logits

    The cascade feeds each stage's refined map to the next stage, where DDAH attends
    features_3 and features_4 side by side (features_4 computed from the unattended
    features_3): ``attention="parallel"`` is that layout, without spatial gates.

    Args:
        num_classes: identities of the training split.
        num_bits: code length.
        width_multiplier: scales every width (1.0 = DDAH's; smaller for tests).
        attention: "cascade" (DAGH) or "parallel" (DDAH's layout; ablation).
        hash_layer: "discrete" (b = sign(h), :class:`DiscreteHash`) or "tanh" (ablation).
        identity_head: "discrete" (:class:`DiscreteIdentityHead`) or "softmax" (a dense
            classifier on the codes; ablation).
        scale: the discrete head's logit scale s.
        backward: the discrete hash layer's backward ("identity" or "clipped").
        gate_kernel: the spatial gates' kernel size.
        min_max_epsilon: epsilon of DDAH's min-max normalisations (0: DDAH's).
        passes: 1 (DAGH as its abstract describes it) or 2: DDAH's training layout, one
            ``trunk`` (everything after the spatial attention) run on the attended image
            (pass a) and on the raw image (pass b).
        name: model name.

    Returns:
        A model from (batch, 32, 32, 3) preprocessed images to [logits, relaxed_codes]
        (float32); with two passes, pass b's [raw_logits, raw_relaxed_codes] follow.
    """
    for value, allowed, what in ((attention, ATTENTIONS, "attention"),
                                 (hash_layer, HASH_LAYERS, "hash_layer"),
                                 (identity_head, IDENTITY_HEADS, "identity_head")):
        if value not in allowed:
            raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
    if passes not in PASSES:
        raise ValueError(f"passes must be one of {PASSES}, got {passes!r}")
    check_sizes(num_classes, num_bits, width_multiplier)
    images = keras.Input(INPUT_SHAPE, name="images")
    attended = DDAHSpatialAttention(attention_filters(width_multiplier), epsilon=min_max_epsilon,
                                    name=ATTENTION_LAYER)(images)
    settings: dict[str, Any] = dict(num_classes=num_classes, num_bits=num_bits,
                    width_multiplier=width_multiplier, attention=attention,
                    hash_layer=hash_layer, identity_head=identity_head, scale=scale,
                    backward=backward, gate_kernel=gate_kernel, min_max_epsilon=min_max_epsilon)
    if passes == 1:
        tensors = _after_attention(attended, **settings)
        names: tuple[str, ...] = OUTPUT_NAMES
    else:  # DDAH's two passes: one trunk on the attended and on the raw image
        trunk_input = keras.Input(INPUT_SHAPE, name="trunk_images")
        trunk = keras.Model(trunk_input, list(_after_attention(trunk_input, **settings)),
                            name=TRUNK_LAYER)
        tensors = (*trunk(attended), *trunk(images))
        names = TWO_PASS_OUTPUT_NAMES
    outputs = [keras.layers.Activation("linear", dtype="float32", name=output_name)(tensor)
               for output_name, tensor in zip(names, tensors)]
    return keras.Model(images, outputs, name=name)


def _after_attention(x, num_classes: int, num_bits: int, width_multiplier: float,
                     attention: str, hash_layer: str, identity_head: str, scale: float,
                     backward: str, gate_kernel: int, min_max_epsilon: float):
    """Everything after the spatial attention: (logits, relaxed codes)."""
    for i, (filters, size) in enumerate(CONV_STAGES, start=1):
        x = conv_bn_relu(x, scaled(filters, width_multiplier), size, f"conv{i}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    hidden = scaled(CHANNEL_HIDDEN, width_multiplier)
    conv4 = scaled(CONV4[0], width_multiplier)
    if attention == "cascade":
        refined_3 = _attention_stage(x, hidden, gate_kernel, min_max_epsilon, "stage3")
        features_4 = conv_bn_relu(refined_3, conv4, CONV4[1], "conv4")
        refined_4 = _attention_stage(features_4, hidden, gate_kernel, min_max_epsilon, "stage4")
    else:
        features_4 = conv_bn_relu(x, conv4, CONV4[1], "conv4")
        refined_3 = DDAHChannelAttention(hidden, min_max_epsilon, name="stage3_channel")(x)
        refined_4 = DDAHChannelAttention(hidden, min_max_epsilon,
                                         name="stage4_channel")(features_4)
    fused = keras.layers.Concatenate(name="fusion")([
        ChannelsFirstFlatten(name="flatten_3")(refined_3),
        ChannelsFirstFlatten(name="flatten_4")(refined_4)])
    face = keras.layers.Dense(scaled(FACE_FEATURES, width_multiplier),
                              kernel_initializer=xavier_normal(), name="face_features")(fused)
    face = batch_norm("face_features_bn")(face)
    face = keras.layers.ReLU(name="face_features_relu")(face)
    relaxed = keras.layers.Dense(num_bits, kernel_initializer=xavier_normal(), name="hash")(face)
    relaxed = batch_norm("hash_bn")(relaxed)
    codes = DiscreteHash(backward, binary=hash_layer == "discrete", name="discrete_hash")(relaxed)
    if identity_head == "discrete":
        logits = DiscreteIdentityHead(num_classes, scale, name="identity_head")(codes)
    else:
        logits = keras.layers.Dense(num_classes, kernel_initializer=xavier_normal(),
                                    name="identity_head")(codes)
    return logits, relaxed


def _attention_stage(x, hidden: int, gate_kernel: int, epsilon: float, name: str):
    """One cascade stage: channel attention, then a spatial gate on its output."""
    x = DDAHChannelAttention(hidden, epsilon, name=f"{name}_channel")(x)
    return SpatialGate(gate_kernel, name=f"{name}_spatial")(x)
