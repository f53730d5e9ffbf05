"""DDAH's spatial attention: an encoder-decoder mask, min-max normalised, times the image."""

from __future__ import annotations

import keras
from keras import ops

from ddah_tf.layers.min_max_normalization import MinMaxNormalization
from ddah_tf.layers.torch_conv_transpose import TorchConvTranspose2D
from ddah_tf.torch_defaults import batch_norm, xavier_normal


def _ids(variables) -> set[int]:
    return {id(v) for v in variables}


@keras.saving.register_keras_serializable(package="face_hashing")
class DDAHSpatialAttention(keras.layers.Layer):
    """The attention branch of DDAH: ``images * mask(images)``, one mask value per pixel.

    With f = ``filters`` (original 32) and a (batch, H, W, C) input, H and W multiples of
    8 (original 32x32x3); names in brackets are the original's attributes::

        e1 = ReLU(BN(Conv f @2x2 stride 2 (x)))          H/2   [spatial_features_1]
        e2 = ReLU(BN(Conv 2f @2x2 stride 2 (e1)))        H/4   [spatial_features_2]
        e3 = ReLU(BN(Conv 4f @2x2 stride 2 (e2)))        H/8   [spatial_features_3]
        b  = ReLU(BN(Conv 4f @1x1 (e3)))                 H/8   [fc]
        d1 = BN(ReLU(ConvT 2f (b)) + e2)                 H/4   [upscales_1, bn1]
        d2 = BN(ReLU(ConvT f (d1)) + e1)                 H/2   [upscales_2, bn2]
        d3 = ReLU(ConvT f/2 (d2))                        H     [upscales_3]
        m  = Conv 1 @1x1 (d3)                            H x W x 1   [upscales_4]
        mask = (m - min m) / (max m - min m + epsilon)   per image, over all H x W
        out  = x * mask                                  (the mask broadcasts over C)

    ConvT is PyTorch's ConvTranspose2d(kernel 3, stride 2, padding 1, output_padding 1)
    (:class:`TorchConvTranspose2D`; Keras' "same" transposed conv is shifted by a pixel).
    Every conv has a bias; kernels Xavier-normal, biases zero, BN at PyTorch's momentum /
    epsilon (ddah_tf.torch_defaults). The original defines a ``bn3`` (f/2 channels) that
    ``forward`` never applies: with ``unused_bn3=True`` the layer creates it (32 trainable
    weights at f = 32, no effect on the output) so that the weight count and layout match
    the public model; the default leaves it out.

    Which weights the original trains: its attention optimiser lists the Sequentials
    ``spatial_features_1..3``, ``fc`` and ``upscales_1..4``, **not** the loose ``bn1``,
    ``bn2`` (nor ``bn3``). Their gamma / beta receive gradients but are never updated (they
    stay 1 / 0; only their batch statistics act). :meth:`optimised_variables` is what that
    optimiser updates; :attr:`skip_batchnorm_variables` and :attr:`unused_variables` are
    the rest.

    Args:
        filters: f, the first encoder width (original 32); must be even (the last
            decoder width is f / 2).
        unused_bn3: create the original's unused ``bn3`` (weights only, never applied).
        epsilon: added to (max - min) of the mask (original: none, 0.0).
        **kwargs: base Layer arguments (name, dtype, ...).

    Example:
        >>> layer = DDAHSpatialAttention(filters=32)
        >>> images = keras.ops.ones((2, 32, 32, 3))
        >>> layer(images).shape                      # attended images
        TensorShape([2, 32, 32, 3])
        >>> layer.attention_mask(images).shape       # in [0, 1], min 0 and max 1 per image
        TensorShape([2, 32, 32, 1])
    """

    def __init__(self, filters: int = 32, unused_bn3: bool = False, epsilon: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if int(filters) < 2 or int(filters) % 2:
            raise ValueError(f"filters must be an even number >= 2, got {filters}")
        self.filters = int(filters)
        self.unused_bn3 = bool(unused_bn3)
        self.epsilon = float(epsilon)
        f = self.filters

        def conv(width: int, size: int, stride: int, name: str):
            return keras.layers.Conv2D(width, size, strides=stride, padding="valid",
                                       kernel_initializer=xavier_normal(), name=name)

        def up(width: int, name: str):
            return TorchConvTranspose2D(width, kernel_size=3, strides=2, padding=1,
                                        output_padding=1, name=name)

        # The three 2x2 stride-2 encoder stages and the 1x1 bottleneck, one attribute per
        # layer: TensorFlow's checkpoint graph follows a Keras layer's plain attributes but
        # not layers inside its lists or tuples, which a model-only restore (evaluation,
        # export) would then silently leave at their initial values.
        self.encoder_1_conv = conv(f, 2, 2, "encoder_1_conv")
        self.encoder_1_bn = batch_norm("encoder_1_bn")
        self.encoder_2_conv = conv(2 * f, 2, 2, "encoder_2_conv")
        self.encoder_2_bn = batch_norm("encoder_2_bn")
        self.encoder_3_conv = conv(4 * f, 2, 2, "encoder_3_conv")
        self.encoder_3_bn = batch_norm("encoder_3_bn")
        self.bottleneck_conv = conv(4 * f, 1, 1, "bottleneck_conv")
        self.bottleneck_bn = batch_norm("bottleneck_bn")
        self.up_1, self.up_2, self.up_3 = (up(2 * f, "decoder_1_up"), up(f, "decoder_2_up"),
                                           up(f // 2, "decoder_3_up"))
        self.bn1 = batch_norm("skip_1_bn")            # the original's bn1 (after + e2)
        self.bn2 = batch_norm("skip_2_bn")            # the original's bn2 (after + e1)
        self.bn3 = batch_norm("unused_bn3") if self.unused_bn3 else None
        self.mask_conv = conv(1, 1, 1, "mask_conv")
        self.normalize = MinMaxNormalization(self.epsilon, name="normalize")

    @property
    def encoder(self) -> list:
        """(conv, bn) of each encoder stage and the bottleneck, in order."""
        return [(self.encoder_1_conv, self.encoder_1_bn),
                (self.encoder_2_conv, self.encoder_2_bn),
                (self.encoder_3_conv, self.encoder_3_bn),
                (self.bottleneck_conv, self.bottleneck_bn)]

    def build(self, input_shape):
        if (len(input_shape) != 4 or any(s is None for s in input_shape[1:])
                or input_shape[1] % 8 or input_shape[2] % 8):
            raise ValueError("DDAHSpatialAttention needs (batch, H, W, C) input with H and W "
                             f"multiples of 8 (three stride-2 stages), got {tuple(input_shape)}")
        shape = (None,) + tuple(int(s) for s in input_shape[1:])
        for conv, bn in self.encoder:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            bn.build(shape)
        for up, bn in ((self.up_1, self.bn1), (self.up_2, self.bn2), (self.up_3, self.bn3)):
            up.build(shape)
            shape = up.compute_output_shape(shape)
            if bn is not None:
                bn.build(shape)
        self.mask_conv.build(shape)
        super().build(input_shape)

    def attention_mask(self, inputs, training=None):
        """(batch, H, W, C) images -> the normalised mask (batch, H, W, 1)."""
        skips = []
        x = inputs
        for conv, bn in self.encoder:
            x = ops.relu(bn(conv(x), training=training))
            skips.append(x)
        e1, e2 = skips[0], skips[1]
        x = self.bn1(ops.relu(self.up_1(x)) + e2, training=training)
        x = self.bn2(ops.relu(self.up_2(x)) + e1, training=training)
        x = ops.relu(self.up_3(x))                    # the original skips its bn3 here
        return self.normalize(self.mask_conv(x))

    def call(self, inputs, training=None):
        return inputs * self.attention_mask(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    @property
    def skip_batchnorm_variables(self) -> list:
        """gamma / beta of bn1 and bn2: trainable, but in neither of the original's optimisers."""
        return list(self.bn1.trainable_variables) + list(self.bn2.trainable_variables)

    @property
    def unused_variables(self) -> list:
        """gamma / beta of the unused bn3 (empty unless ``unused_bn3``): never has a gradient."""
        return [] if self.bn3 is None else list(self.bn3.trainable_variables)

    def optimised_variables(self, include_skip_batchnorms: bool = False) -> list:
        """What the original's attention optimiser (``optimizer_a``) updates.

        Args:
            include_skip_batchnorms: also bn1 / bn2's gamma and beta (what the authors
                presumably meant; the original leaves them out).
        """
        excluded = _ids(self.unused_variables)
        if not include_skip_batchnorms:
            excluded |= _ids(self.skip_batchnorm_variables)
        return [v for v in self.trainable_variables if id(v) not in excluded]

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, unused_bn3=self.unused_bn3, epsilon=self.epsilon)
        return config
