"""DDAH's layers (ddah_tf.layers) against the independent float64 numpy references of
tests/ddah_numpy_reference.py, plus their configs and serialization."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import ddah_numpy_reference as ref
from tiny_networks import arr, randomize_batchnorms
from ddah_tf.layers import (ChannelsFirstFlatten, DDAHChannelAttention, DDAHSpatialAttention,
                            MinMaxNormalization, TorchConvTranspose2D)
from ddah_tf.torch_defaults import BN_EPSILON, BN_MOMENTUM

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
              pytest.mark.usefixtures("seeded_weights")]


# --------------------------------------------------------------------------- TorchConvTranspose2D
@pytest.mark.parametrize("size, in_c, filters, k, s, p, op", [
    ((4, 4), 5, 3, 3, 2, 1, 1),     # DDAH's decoder: doubles the size
    ((3, 5), 2, 4, 3, 2, 1, 1),     # non-square
    ((4, 4), 3, 2, 2, 2, 0, 0),     # plain 2x upsampling
    ((5, 4), 2, 3, 3, 1, 1, 0),     # stride 1, "same"-sized
    ((3, 3), 2, 2, 3, 2, 0, 1),     # output_padding > padding: the extra row / column is bias only
])
def test_torch_conv_transpose_matches_pytorch_semantics(size, in_c, filters, k, s, p, op):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2,) + size + (in_c,)).astype(np.float32)
    layer = TorchConvTranspose2D(filters, k, s, p, op)
    layer.build(x.shape)
    assert tuple(layer.kernel.shape) == (k, k, filters, in_c)
    layer.bias.assign(rng.standard_normal(filters).astype(np.float32))
    out = arr(layer(x))
    want = ref.torch_conv_transpose2d(x, ref.keras_to_torch_transpose_kernel(layer.kernel),
                                      layer.bias, s, p, op)
    assert out.shape == want.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_keras_same_transposed_conv_is_shifted_against_pytorch():
    """Why the custom layer: Keras' "same" doubling conv pairs input i with output 2i + k,
    PyTorch's padding 1 / output_padding 1 with 2i + k - 1."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
    ours = TorchConvTranspose2D(3, 3, 2, 1, 1, use_bias=False)
    keras_same = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", use_bias=False)
    ours.build(x.shape)
    keras_same.build(x.shape)
    keras_same.kernel.assign(ours.kernel)
    a, b = arr(ours(x)), arr(keras_same(x))
    assert a.shape == b.shape == (1, 8, 8, 3)
    assert not np.allclose(a, b, atol=1e-3)
    # PyTorch's output o is Keras' o + 1: one pixel up and left.
    np.testing.assert_allclose(a[:, :-1, :-1], b[:, 1:, 1:], rtol=1e-5, atol=1e-5)


def test_torch_conv_transpose_symbolic_config_and_errors():
    layer = TorchConvTranspose2D(64, name="up")
    assert tuple(layer(keras.Input((4, 4, 128))).shape) == (None, 8, 8, 64)
    config = layer.get_config()
    assert {k: config[k] for k in ("filters", "kernel_size", "strides", "padding",
                                   "output_padding", "use_bias", "kernel_initializer")} == dict(
        filters=64, kernel_size=3, strides=2, padding=1, output_padding=1, use_bias=True,
        kernel_initializer=None)
    clone = TorchConvTranspose2D.from_config(config)
    assert clone.get_config() == config
    custom = TorchConvTranspose2D(2, 2, 2, 0, 0, use_bias=False,
                                  kernel_initializer=keras.initializers.Constant(0.5))
    clone = TorchConvTranspose2D.from_config(custom.get_config())
    assert clone.get_config() == custom.get_config() and clone.use_bias is False
    np.testing.assert_array_equal(arr(clone(np.ones((1, 1, 1, 1), np.float32)))[0, :, :, 0],
                                  np.full((2, 2), 0.5))
    for kwargs, message in ((dict(filters=0), "filters"), (dict(filters=2, output_padding=2),
                                                           "output_padding"),
                            (dict(filters=2, padding=-1), "padding")):
        with pytest.raises(ValueError, match=message):
            TorchConvTranspose2D(**kwargs)


def test_torch_conv_transpose_default_init_is_xavier_normal():
    layer = TorchConvTranspose2D(64, 3)
    layer.build((None, 4, 4, 128))
    kernel = arr(layer.kernel)
    std = np.sqrt(2.0 / (128 * 9 + 64 * 9))          # PyTorch: fan_in + fan_out over kh * kw
    assert kernel.std() == pytest.approx(std, rel=0.05)
    assert np.abs(kernel).max() > 3 * std            # untruncated (Keras' GlorotNormal cuts at 2)
    np.testing.assert_array_equal(arr(layer.bias), np.zeros(64))


# --------------------------------------------------------------------------- MinMaxNormalization
@pytest.mark.parametrize("shape", [(3, 8, 8, 1), (4, 7), (2, 3, 5, 2)])
def test_min_max_matches_numpy_per_sample(shape):
    x = (5 * np.random.default_rng(2).standard_normal(shape) + 3).astype(np.float32)
    got = arr(MinMaxNormalization()(x))
    np.testing.assert_allclose(got, ref.min_max(x), rtol=1e-5, atol=1e-6)
    flat = got.reshape(shape[0], -1)
    np.testing.assert_allclose(flat.min(axis=1), 0.0, atol=1e-7)   # per sample, not per batch
    np.testing.assert_allclose(flat.max(axis=1), 1.0, atol=1e-6)
    eps = arr(MinMaxNormalization(0.5)(x))
    np.testing.assert_allclose(eps, ref.min_max(x, 0.5), rtol=1e-5, atol=1e-6)


def test_min_max_without_epsilon_is_nan_on_a_constant_sample_like_the_original():
    x = np.stack([np.full((2, 2, 1), 3.0), np.arange(4.0).reshape(2, 2, 1)]).astype(np.float32)
    got = arr(MinMaxNormalization()(x))
    assert np.isnan(got[0]).all() and np.isfinite(got[1]).all()
    assert np.isfinite(arr(MinMaxNormalization(1e-6)(x))).all()


def test_min_max_config_and_errors():
    layer = MinMaxNormalization(1e-3, name="mm")
    config = layer.get_config()
    assert config["epsilon"] == 1e-3 and config["name"] == "mm"
    assert MinMaxNormalization.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        MinMaxNormalization(-1.0)


# --------------------------------------------------------------------------- ChannelsFirstFlatten
def test_channels_first_flatten_matches_pytorch_view():
    x = np.random.default_rng(3).standard_normal((2, 3, 2, 5)).astype(np.float32)
    layer = ChannelsFirstFlatten()
    np.testing.assert_array_equal(arr(layer(x)), ref.flatten_channel_major(x).astype(np.float32))
    assert tuple(layer(keras.Input((3, 3, 128))).shape) == (None, 1152)
    assert ChannelsFirstFlatten.from_config(layer.get_config()).get_config() == layer.get_config()


# --------------------------------------------------------------------------- DDAHChannelAttention
@pytest.mark.parametrize("shape, hidden", [((3, 3, 3, 16), 24), ((4, 2, 2, 32), 24)])
def test_channel_attention_matches_numpy(shape, hidden):
    rng = np.random.default_rng(4)
    x = np.abs(rng.standard_normal(shape)).astype(np.float32)      # post-ReLU maps
    layer = DDAHChannelAttention(hidden)
    out = arr(layer(x))
    weights = [layer.hidden.get_weights(), layer.output_dense.get_weights()]
    assert [w.shape for w in weights[0] + weights[1]] == [
        (np.prod(shape[1:]), hidden), (hidden,), (hidden, shape[-1]), (shape[-1],)]
    np.testing.assert_allclose(arr(layer.channel_weights(x)),
                               ref.channel_attention_weights(x, *weights), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, ref.channel_attention(x, *weights), rtol=1e-4, atol=1e-5)
    w = arr(layer.channel_weights(x))
    np.testing.assert_allclose(w.min(axis=1), 0, atol=1e-7)       # per image over channels
    np.testing.assert_allclose(w.max(axis=1), 1, atol=1e-6)


def test_channel_attention_sizes_config_and_errors():
    layer = DDAHChannelAttention(512, name="ca")
    assert tuple(layer(keras.Input((3, 3, 128))).shape) == (None, 3, 3, 128)
    count = sum(int(np.prod(v.shape)) for v in layer.trainable_variables)
    assert count == (1152 * 512 + 512) + (512 * 128 + 128)          # 656,000
    config = layer.get_config()
    assert config["hidden_units"] == 512 and config["epsilon"] == 0.0
    clone = DDAHChannelAttention.from_config(config)
    assert clone.get_config() == config
    x = np.random.default_rng(5).random((2, 2, 2, 8)).astype(np.float32)
    small = DDAHChannelAttention(6, 0.1)
    want = arr(small(x))
    clone = DDAHChannelAttention.from_config(small.get_config())
    clone.build(x.shape)
    clone.set_weights(small.get_weights())
    np.testing.assert_array_equal(arr(clone(x)), want)
    with pytest.raises(ValueError, match="hidden_units"):
        DDAHChannelAttention(0)
    with pytest.raises(ValueError, match="known sizes"):
        DDAHChannelAttention(4)(keras.Input((None, 3, 8)))


# --------------------------------------------------------------------------- DDAHSpatialAttention
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("filters, size", [(4, 32), (6, 16)])
def test_spatial_attention_matches_numpy(training, filters, size):
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (3, size, size, 3)).astype(np.float32)
    layer = DDAHSpatialAttention(filters)
    layer.build(x.shape)
    randomize_batchnorms(layer, rng, std=0.2, max_variance=2.0)
    for sub in (layer.up_1, layer.up_2, layer.up_3, layer.mask_conv, layer.encoder[0][0]):
        sub.bias.assign(rng.normal(scale=0.1, size=sub.bias.shape).astype(np.float32))
    p = ref.spatial_params(layer)
    want_mask = ref.spatial_attention_mask(x, p, training)
    mask = arr(layer.attention_mask(x, training=training))
    assert mask.shape == (3, size, size, 1)
    np.testing.assert_allclose(mask, want_mask, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(mask.reshape(3, -1).min(axis=1), 0, atol=1e-7)
    np.testing.assert_allclose(mask.reshape(3, -1).max(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(arr(layer(x, training=training)), x * want_mask,
                               rtol=1e-4, atol=2e-5)


def test_spatial_attention_weights_and_groups():
    """Widths f, 2f, 4f, 4f / 2f, f, f/2 / 1 and the original's optimiser membership."""
    f = 32
    layer = DDAHSpatialAttention(f)
    layer.build((None, 32, 32, 3))
    shapes = {v.path.split("/", 1)[1]: tuple(v.shape) for v in layer.trainable_variables}
    assert shapes["encoder_1_conv/kernel"] == (2, 2, 3, f)
    assert shapes["bottleneck_conv/kernel"] == (1, 1, 4 * f, 4 * f)
    assert shapes["decoder_1_up/kernel"] == (3, 3, 2 * f, 4 * f)
    assert shapes["decoder_3_up/kernel"] == (3, 3, f // 2, f)
    assert shapes["mask_conv/kernel"] == (1, 1, f // 2, 1)
    count = lambda vs: sum(int(np.prod(v.shape)) for v in vs)
    assert count(layer.trainable_variables) == 155_873
    assert count(layer.skip_batchnorm_variables) == 2 * (64 + 32)
    assert layer.unused_variables == []
    assert count(layer.optimised_variables()) == 155_873 - 192
    assert count(layer.optimised_variables(include_skip_batchnorms=True)) == 155_873
    bns = [s for s in layer._flatten_layers(include_self=False)
           if isinstance(s, keras.layers.BatchNormalization)]
    assert len(bns) == 6
    assert all(bn.momentum == BN_MOMENTUM == 0.9 and bn.epsilon == BN_EPSILON == 1e-5
               for bn in bns)


def test_unused_bn3_has_weights_but_no_effect():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    plain = DDAHSpatialAttention(4)
    with_bn3 = DDAHSpatialAttention(4, unused_bn3=True)
    plain.build(x.shape)
    with_bn3.build(x.shape)
    assert [v.path.split("/", 1)[1] for v in with_bn3.unused_variables] == [
        "unused_bn3/gamma", "unused_bn3/beta"]
    assert len(with_bn3.trainable_variables) == len(plain.trainable_variables) + 2
    # Same weights elsewhere -> same output, whatever bn3 holds.
    by_path = {v.path.split("/", 1)[1]: v for v in with_bn3.variables}
    for v in plain.variables:
        by_path[v.path.split("/", 1)[1]].assign(v)
    with_bn3.bn3.gamma.assign(rng.uniform(2, 3, 2).astype(np.float32))
    with_bn3.bn3.beta.assign(rng.uniform(2, 3, 2).astype(np.float32))
    np.testing.assert_array_equal(arr(with_bn3(x, training=True)), arr(plain(x, training=True)))
    ids = {id(v) for v in with_bn3.optimised_variables(True)}
    assert not ids & {id(v) for v in with_bn3.unused_variables}


def test_spatial_attention_config_round_trip_and_errors():
    layer = DDAHSpatialAttention(8, unused_bn3=True, epsilon=1e-6, name="sa")
    config = layer.get_config()
    assert (config["filters"], config["unused_bn3"], config["epsilon"]) == (8, True, 1e-6)
    clone = DDAHSpatialAttention.from_config(config)
    assert clone.get_config() == config
    x = np.random.default_rng(8).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    want = arr(layer(x, training=False))
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(arr(clone(x, training=False)), want)
    for filters in (0, 3):
        with pytest.raises(ValueError, match="even number"):
            DDAHSpatialAttention(filters)
    with pytest.raises(ValueError, match="multiples of 8"):
        DDAHSpatialAttention(4)(keras.Input((28, 28, 3)))


def test_spatial_attention_gradients():
    """Every weight gets a gradient; those of the biases that a training-mode BN (encoder
    and bottleneck convs) or the min-max normalisation (mask conv) cancel are zero, as in
    the original (only its weight decay moves them)."""
    layer = DDAHSpatialAttention(4)
    x = tf.constant(np.random.default_rng(9).uniform(-1, 1, (3, 16, 16, 3)), tf.float32)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x, training=True) * tf.cos(x))
    grads = tape.gradient(y, layer.trainable_variables)
    cancelled = {f"{name}/bias" for name in ("encoder_1_conv", "encoder_2_conv", "encoder_3_conv",
                                            "bottleneck_conv", "mask_conv")}
    for g, v in zip(grads, layer.trainable_variables):
        name = v.path.split("/", 1)[1]
        assert g is not None, name
        if name in cancelled:
            assert np.abs(arr(g)).max() < 1e-5, name
        else:
            assert np.abs(arr(g)).max() > 1e-4, name
