"""The DCBH convolutional backbone with two-scale fusion (shared by DCBH and DDCH).

Four VGG-style blocks of 3x3 conv (no bias, Glorot-uniform) -> batch norm (momentum
0.9, epsilon 1e-3) -> ReLU, each ending in a 2x2/2 max-pool: 64,64 | 128,128 |
256,256,256 | 512,512,512. The global average of block 3 (256) and of block 4 (512)
are concatenated, block 4 first, into a 768-wide descriptor (the original FHNet).

Differences from TF1 that cannot be expressed with Keras' BatchNormalization (see
docs/PORTING.md): TF1's zero-debiased moving mean and Bessel-corrected moving
variance. They only change inference-time statistics in the first ~50 steps.
"""

from __future__ import annotations

import keras

BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


def conv_bn_relu(x, filters: int, name: str):
    """3x3 SAME conv without bias -> batch norm -> ReLU."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                            kernel_initializer="glorot_uniform", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def multiscale_backbone(inputs, width_multiplier: float = 1.0):
    """Fused two-scale descriptor of ``inputs`` (batch, 32, 32, 3).

    Args:
        inputs: image tensor, NHWC, preprocessed.
        width_multiplier: scales every block's filter count (1.0 = the original).
            Smaller values are for quick experiments and tests only.

    Returns:
        (batch, 768 * width_multiplier) tensor: concat[GAP(block 4), GAP(block 3)].
    """
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}")
    x = inputs
    pooled = []
    for b, filters in enumerate(BLOCKS, start=1):
        for c, f in enumerate(filters, start=1):
            x = conv_bn_relu(x, max(1, int(round(f * width_multiplier))), name=f"block{b}_{c}")
        x = keras.layers.MaxPooling2D(2, strides=2, padding="valid", name=f"block{b}_pool")(x)
        if b >= 3:
            pooled.append(keras.layers.GlobalAveragePooling2D(name=f"block{b}_gap")(x))
    return keras.layers.Concatenate(name="multiscale_fusion")([pooled[1], pooled[0]])
