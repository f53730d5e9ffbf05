"""StraightThroughSign: exact +-1 forward (0 and -0.0 -> +1), straight-through gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.layers import StraightThroughSign


def reference_sign(x):
    """The original's binarisation: np.sign with 0 -> +1 (np.sign(-0.0) == 0, so -0.0 -> +1)."""
    s = np.sign(np.asarray(x, np.float64))
    s[s == 0] = 1.0
    return s


def edge_values(dtype):
    finfo = np.finfo(dtype)
    return np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-30, -1e-30, finfo.tiny, -finfo.tiny,
                     1e-8, -1e-8, 0.3, -0.3, 0.1, -0.1, 1.0 + finfo.eps, -1.0 - finfo.eps,
                     3.0, -3.0, 2.0 ** 24 + 2, -(2.0 ** 24) - 2, 1e8, -1e8, 1e30, -1e30,
                     finfo.max, -finfo.max], dtype=dtype)


def grad_of(layer, x, upstream):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(layer(xt) * tf.constant(upstream, xt.dtype))
    return tape.gradient(y, xt).numpy()


def test_the_layer_maps_both_zeros_to_plus_one():
    """The original's rule (np.sign, then 0 -> +1): -0.0 and 0.0 give +1, a tiny negative
    number -1; the reference the other tests use agrees. (Tiny but normal: TensorFlow's CPU
    kernels flush subnormal numbers such as 1e-45 to zero, numpy does not.)"""
    x = np.array([[-0.0, 0.0, -1e-30, 1e-30]], np.float32)
    np.testing.assert_array_equal(np.asarray(StraightThroughSign()(x)), [[1, 1, -1, 1]])
    np.testing.assert_array_equal(reference_sign(x), [[1, 1, -1, 1]])


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_exactly_plus_minus_one(clip, dtype):
    rng = np.random.default_rng(0)
    scales = rng.choice([1e-7, 1e-3, 1.0, 10.0, 1e4, 1e9], size=2000)
    x = np.concatenate([edge_values(dtype), rng.normal(size=2000) * scales]).astype(dtype)
    layer = StraightThroughSign(clip_gradient=clip, dtype=dtype)
    got = layer(x).numpy()
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, reference_sign(x))     # exact, incl. huge |x|
    assert set(np.unique(got)) <= {-1.0, 1.0}


def test_subnormals_still_give_plus_minus_one():
    # TensorFlow's CPU kernels flush subnormals to zero, so -subnormal may compare as -0.0
    # (-> +1); only the +-1 range is guaranteed there.
    for dtype in ("float32", "float64"):
        tiny = np.finfo(dtype).smallest_subnormal
        x = np.array([tiny, -tiny, 4 * tiny, -4 * tiny], dtype)
        got = StraightThroughSign(dtype=dtype)(x).numpy()
        assert set(np.unique(got)) <= {-1.0, 1.0}
        assert got[0] == 1.0 and got[2] == 1.0


def test_zero_and_negative_zero_give_plus_one():
    x = np.array([[0.0, -0.0]], np.float32)
    assert np.signbit(x[0, 1])
    got = StraightThroughSign()(x).numpy()
    np.testing.assert_array_equal(got, [[1.0, 1.0]])
    assert not np.signbit(got).any()


def test_forward_exact_inside_tf_function_and_shape_preserved():
    layer = StraightThroughSign()
    x = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32) * 1e8
    x[0, 0, 0] = -0.0
    got = tf.function(layer)(tf.constant(x)).numpy()
    assert got.shape == x.shape
    np.testing.assert_array_equal(got, reference_sign(x))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_identity_unclipped(dtype):
    rng = np.random.default_rng(2)
    x = np.concatenate([edge_values(dtype)[:-2], rng.normal(size=100) * 5]).astype(dtype)
    upstream = rng.normal(size=x.shape)
    grad = grad_of(StraightThroughSign(dtype=dtype), x, upstream)
    np.testing.assert_array_equal(grad, upstream.astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_masked_when_clipped(dtype):
    rng = np.random.default_rng(3)
    x = np.concatenate([edge_values(dtype)[:-2], rng.normal(size=100) * 2]).astype(dtype)
    upstream = rng.normal(size=x.shape)
    grad = grad_of(StraightThroughSign(clip_gradient=True, dtype=dtype), x, upstream)
    expected = np.where(np.abs(x.astype(np.float64)) <= 1, upstream, 0.0).astype(dtype)
    np.testing.assert_array_equal(grad, expected)


def test_clipped_gradient_boundary():
    x = np.array([-1.5, -1.0, -0.999, 0.0, 0.999, 1.0, 1.0000001, 1.5], np.float32)
    grad = grad_of(StraightThroughSign(clip_gradient=True), x, np.ones_like(x))
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 1, 1, 0, 0])
    grad = grad_of(StraightThroughSign(), x, np.ones_like(x))
    np.testing.assert_array_equal(grad, np.ones_like(x))


def test_gradient_through_previous_layer():
    # d/dw sum(sign_st(w * x)) = x (straight through), as if the sign were the identity.
    x = np.array([[0.5, -2.0, 3.0]], np.float32)
    w = tf.Variable(np.ones((1, 3), np.float32))
    layer = StraightThroughSign()
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(w * x))
    np.testing.assert_array_equal(tape.gradient(y, w).numpy(), x)


def test_config_round_trip():
    for clip in (False, True):
        layer = StraightThroughSign(clip_gradient=clip, name=f"sts_{clip}")
        config = layer.get_config()
        assert config["clip_gradient"] is clip and config["name"] == f"sts_{clip}"
        clone = StraightThroughSign.from_config(config)
        assert clone.clip_gradient is clip
        assert clone.get_config() == config
    assert StraightThroughSign().clip_gradient is False


@pytest.mark.parametrize("clip", [False, True])
def test_keras_save_and_reload(tmp_path, clip):
    inputs = keras.Input((8,))
    features = keras.layers.Dense(6, name="dense")(inputs)
    codes = StraightThroughSign(clip_gradient=clip, name="sign")(features)
    model = keras.Model(inputs, codes)
    x = np.random.default_rng(4).normal(size=(10, 8)).astype(np.float32)
    before = model.predict(x, verbose=0)
    kernel, bias = model.get_layer("dense").get_weights()
    np.testing.assert_array_equal(before, reference_sign(x @ kernel + bias))
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    layer = reloaded.get_layer("sign")
    assert isinstance(layer, StraightThroughSign) and layer.clip_gradient is clip
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), before)
