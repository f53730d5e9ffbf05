"""BlockHash against an independent float64 numpy reference."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.layers import BlockHash

SHAPES = [(48, 6), (1, 1), (3, 1), (1, 5), (12, 4), (7, 3)]

# code_length 1 is valid (every bit is tanh(0.5)); Keras warns about a size-1 softmax axis.
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1:UserWarning")


def reference(x, num_bits, code_length):
    """tanh(max(softmax(block)) - 0.5) per block, float64."""
    blocks = np.asarray(x, np.float64).reshape(len(x), num_bits, code_length)
    e = np.exp(blocks - blocks.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return np.tanh(p.max(axis=-1) - 0.5)


def reference_grad(x, weights, num_bits, code_length):
    """d sum(weights * reference(x)) / dx, analytically:
    d tanh(p_k - 0.5)/dx_j = (1 - tanh^2) * p_k * (delta_jk - p_j), k = argmax."""
    blocks = np.asarray(x, np.float64).reshape(len(x), num_bits, code_length)
    e = np.exp(blocks - blocks.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    k = p.argmax(axis=-1)
    pk = p.max(axis=-1)
    out = np.tanh(pk - 0.5)
    onehot = np.eye(code_length)[k]
    grad = (weights * (1 - out ** 2) * pk)[..., None] * (onehot - p)
    return grad.reshape(len(x), num_bits * code_length)


@pytest.mark.parametrize("num_bits,code_length", SHAPES)
def test_forward_matches_numpy(num_bits, code_length):
    rng = np.random.default_rng(num_bits * 100 + code_length)
    x = (3 * rng.normal(size=(5, num_bits * code_length))).astype(np.float32)
    got = BlockHash(num_bits, code_length)(x)
    assert got.dtype == tf.float32
    assert tuple(got.shape) == (5, num_bits)
    np.testing.assert_allclose(got.numpy(), reference(x, num_bits, code_length), rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_bits,code_length", SHAPES)
def test_forward_float64_layer_matches_numpy_tightly(num_bits, code_length):
    rng = np.random.default_rng(7 + num_bits + code_length)
    x = 3 * rng.normal(size=(4, num_bits * code_length))
    got = BlockHash(num_bits, code_length, dtype="float64")(x)
    assert got.dtype == tf.float64
    np.testing.assert_allclose(got.numpy(), reference(x, num_bits, code_length), rtol=0, atol=1e-13)


def test_code_length_one_is_constant():
    # One unit per block always holds all the mass: every bit is tanh(0.5).
    x = np.random.default_rng(0).normal(size=(3, 9)).astype(np.float32) * 10
    got = BlockHash(9, 1)(x).numpy()
    np.testing.assert_allclose(got, np.full((3, 9), np.tanh(0.5)), rtol=0, atol=1e-7)


def test_bit_positive_iff_one_unit_holds_more_than_half_the_mass():
    # Block logits chosen as log-probabilities, so the softmax is exactly these masses.
    masses = [
        [0.6, 0.2, 0.2],      # winner > 0.5 -> positive
        [0.51, 0.48, 0.01],   # barely > 0.5 -> positive
        [0.9, 0.05, 0.05],    # positive
        [0.4, 0.35, 0.25],    # no majority -> negative
        [0.49, 0.49, 0.02],   # two near-halves, neither > 0.5 -> negative
        [1 / 3, 1 / 3, 1 / 3],  # uniform -> most negative: tanh(1/3 - 1/2)
    ]
    masses = np.array(masses)
    x = np.log(masses).reshape(1, -1)
    got = BlockHash(len(masses), 3, dtype="float64")(x).numpy()[0]
    expected_sign = np.where(masses.max(axis=1) > 0.5, 1.0, -1.0)
    np.testing.assert_array_equal(np.sign(got), expected_sign)
    np.testing.assert_allclose(got, np.tanh(masses.max(axis=1) - 0.5), rtol=0, atol=1e-12)
    # Shifting every logit of a block by a constant leaves the bit unchanged.
    shifted = BlockHash(len(masses), 3, dtype="float64")(x + 17.0).numpy()[0]
    np.testing.assert_allclose(shifted, got, rtol=0, atol=1e-12)


def test_sign_matches_majority_on_random_blocks():
    rng = np.random.default_rng(3)
    x = 2 * rng.normal(size=(64, 48 * 6))
    got = BlockHash(48, 6, dtype="float64")(x).numpy()
    blocks = x.reshape(64, 48, 6)
    p = np.exp(blocks) / np.exp(blocks).sum(-1, keepdims=True)
    majority = p.max(-1) > 0.5
    assert 0 < majority.mean() < 1          # both signs occur
    np.testing.assert_array_equal(got > 0, majority)


@pytest.mark.parametrize("num_bits,code_length", [(48, 6), (5, 3), (4, 1), (2, 7)])
def test_gradient_float64_matches_analytic_and_finite_difference(num_bits, code_length):
    rng = np.random.default_rng(11 + code_length)
    x = 2 * rng.normal(size=(3, num_bits * code_length))
    w = rng.normal(size=(3, num_bits))
    layer = BlockHash(num_bits, code_length, dtype="float64")
    xt = tf.constant(x, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(layer(xt) * w)
    grad = tape.gradient(y, xt).numpy()
    analytic = reference_grad(x, w, num_bits, code_length)
    np.testing.assert_allclose(grad, analytic, rtol=0, atol=1e-12)

    # Central finite differences of the numpy reference on a few coordinates.
    eps = 1e-6
    for j in rng.choice(x.shape[1], size=min(10, x.shape[1]), replace=False):
        for i in range(len(x)):
            xp, xm = x.copy(), x.copy()
            xp[i, j] += eps
            xm[i, j] -= eps
            fd = (np.sum(reference(xp, num_bits, code_length) * w)
                  - np.sum(reference(xm, num_bits, code_length) * w)) / (2 * eps)
            assert abs(fd - grad[i, j]) < 1e-7


def test_gradient_float32_layer_close_to_analytic():
    rng = np.random.default_rng(5)
    x = (2 * rng.normal(size=(4, 288))).astype(np.float32)
    w = rng.normal(size=(4, 48))
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(BlockHash(48, 6)(xt) * tf.constant(w, tf.float32))
    grad = tape.gradient(y, xt).numpy()
    analytic = reference_grad(x, w, 48, 6)
    np.testing.assert_allclose(grad, analytic, rtol=1e-4, atol=1e-6)


def test_wrong_input_width_raises():
    with pytest.raises(ValueError, match=r"BlockHash expects 48 x 6 = 288 input units, got 287"):
        BlockHash(48, 6)(np.zeros((2, 287), np.float32))
    with pytest.raises(ValueError, match=r"288 input units, got 100"):
        BlockHash(48, 6)(keras.Input((100,)))


@pytest.mark.parametrize("num_bits,code_length", [(0, 6), (48, 0), (-1, 3)])
def test_bad_arguments_raise(num_bits, code_length):
    with pytest.raises(ValueError, match="must be >= 1"):
        BlockHash(num_bits, code_length)


def test_symbolic_shape():
    out = BlockHash(48, 6)(keras.Input((288,)))
    assert tuple(out.shape) == (None, 48)
    assert BlockHash(48, 6).compute_output_shape((None, 288)) == (None, 48)


def test_config_round_trip():
    layer = BlockHash(12, 4, name="bh")
    config = layer.get_config()
    assert config["num_bits"] == 12 and config["code_length"] == 4 and config["name"] == "bh"
    clone = BlockHash.from_config(config)
    assert isinstance(clone, BlockHash)
    assert (clone.num_bits, clone.code_length, clone.name) == (12, 4, "bh")
    assert clone.get_config() == config
    x = np.random.default_rng(0).normal(size=(2, 48)).astype(np.float32)
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())


def test_keras_save_and_reload(tmp_path):
    inputs = keras.Input((16,))
    features = keras.layers.Dense(288, name="dense")(inputs)
    codes = BlockHash(48, 6, name="block_hash")(features)
    model = keras.Model(inputs, codes)
    x = np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    layer = reloaded.get_layer("block_hash")
    assert isinstance(layer, BlockHash)
    assert (layer.num_bits, layer.code_length) == (48, 6)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), before)
    dense = model.get_layer("dense").get_weights()
    np.testing.assert_allclose(before, reference(x @ dense[0] + dense[1], 48, 6), rtol=0, atol=1e-6)
