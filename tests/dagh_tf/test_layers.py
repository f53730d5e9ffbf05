"""DAGH's layers (dagh_tf.layers) against float64 numpy references written here, independently
of the code under test: the spatial gate's pooled 'same' conv, the discrete hash layer's
forward values and closed-form surrogate gradients, and the discrete identity head's Hamming
logits and straight-through center gradients; plus their configs and serialization."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from numpy_reference import sign
from tiny_networks import arr

from dagh_tf.layers import DiscreteHash, DiscreteIdentityHead, SpatialGate

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*"),
              pytest.mark.usefixtures("seeded_weights")]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- numpy references
def conv2d_same(x, kernel, bias):
    """Stride-1 'same' cross-correlation (NHWC), odd kernel, zero padding (k - 1) / 2 on
    each side: out[b, i, j, o] = sum_{di, dj, c} pad[b, i + di, j + dj, c] * kernel[di, dj, c, o]
    + bias[o]."""
    x, kernel, bias = (np.asarray(a, np.float64) for a in (x, kernel, bias))
    kh, kw, _, out_c = kernel.shape
    assert kh % 2 == 1 and kw % 2 == 1
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    b, h, w, _ = x.shape
    padded = np.zeros((b, h + 2 * ph, w + 2 * pw, x.shape[-1]))
    padded[:, ph:ph + h, pw:pw + w] = x
    out = np.zeros((b, h, w, out_c))
    for i in range(h):
        for j in range(w):
            window = padded[:, i:i + kh, j:j + kw, :]                  # (b, kh, kw, c)
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", window, kernel)
    return out + bias


def spatial_gate_mask(x, kernel, bias):
    x = np.asarray(x, np.float64)
    pooled = np.concatenate([x.mean(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)],
                            axis=-1)
    return sigmoid(conv2d_same(pooled, kernel, bias))


def hamming(a, b):
    """(n, K) x (m, K) of +-1 codes -> (n, m) counts of differing bits."""
    return (np.asarray(a)[:, None, :] != np.asarray(b)[None, :, :]).sum(axis=-1)


# --------------------------------------------------------------------------- SpatialGate
@pytest.mark.parametrize("shape, kernel_size", [
    ((2, 3, 3, 8), 3),      # DAGH's stage 3 map (at a small width)
    ((3, 2, 2, 16), 3),     # stage 4: a 3x3 kernel on a 2x2 map is mostly padding
    ((2, 5, 4, 3), 3),      # non-square
    ((4, 3, 3, 8), 1),      # 1x1: a per-location affine map of the two pools
    ((2, 4, 5, 1), 1),      # one channel: mean = max
])
def test_spatial_gate_matches_numpy(shape, kernel_size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    gate = SpatialGate(kernel_size)
    gate.build(x.shape)
    kernel, bias = gate.conv.kernel, gate.conv.bias
    assert tuple(kernel.shape) == (kernel_size, kernel_size, 2, 1) and tuple(bias.shape) == (1,)
    bias.assign(np.array([0.3], np.float32))                     # non-trivial bias
    want_mask = spatial_gate_mask(x, arr(kernel), arr(bias))
    mask = arr(gate.mask(x))
    assert mask.shape == shape[:3] + (1,)
    np.testing.assert_allclose(mask, want_mask, rtol=1e-5, atol=1e-6)
    out = arr(gate(x))
    assert out.shape == shape == tuple(gate.compute_output_shape(shape))
    np.testing.assert_allclose(out, x * want_mask, rtol=1e-5, atol=1e-6)


def test_spatial_gate_padding_is_zero_on_every_side():
    """A kernel that reads one neighbour only: at the border that neighbour is a zero pad,
    so the mask there is sigmoid(bias) exactly, and inside it is sigmoid(w * pooled + bias)."""
    x = np.random.default_rng(1).uniform(0.5, 2.0, (2, 3, 4, 5)).astype(np.float32)
    gate = SpatialGate(3)
    gate.build(x.shape)
    kernel = np.zeros((3, 3, 2, 1), np.float32)
    kernel[0, 0, 1, 0] = 1.5                       # the max pool of the up-left neighbour
    gate.conv.kernel.assign(kernel)
    gate.conv.bias.assign(np.array([-0.25], np.float32))
    mask = arr(gate.mask(x))[..., 0]
    np.testing.assert_allclose(mask[:, 0, :], sigmoid(-0.25), rtol=1e-6)
    np.testing.assert_allclose(mask[:, :, 0], sigmoid(-0.25), rtol=1e-6)
    want = sigmoid(1.5 * x.astype(np.float64).max(axis=-1)[:, :-1, :-1] - 0.25)
    np.testing.assert_allclose(mask[:, 1:, 1:], want, rtol=1e-5)


def test_spatial_gate_mask_range_and_symbolic_shape():
    gate = SpatialGate()
    x = (10 * np.random.default_rng(2).standard_normal((3, 3, 3, 6))).astype(np.float32)
    mask = arr(gate.mask(x))
    assert mask.shape == (3, 3, 3, 1)
    assert (mask > 0).all() and (mask < 1).all()
    assert tuple(SpatialGate(name="g")(keras.Input((2, 2, 32))).shape) == (None, 2, 2, 32)
    ones = arr(SpatialGate().mask(np.ones((2, 3, 3, 8), np.float32)))
    assert ones.shape == (2, 3, 3, 1) and ((ones > 0) & (ones < 1)).all()


def test_spatial_gate_gradients_reach_the_conv():
    gate = SpatialGate(3)
    x = tf.constant(np.random.default_rng(3).standard_normal((2, 3, 3, 4)), tf.float32)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(gate(x) * tf.cos(x))
    grads = tape.gradient(y, gate.trainable_variables)
    assert len(gate.trainable_variables) == 2
    assert all(g is not None and np.abs(arr(g)).max() > 0 for g in grads)


def test_spatial_gate_config_round_trip_and_errors():
    gate = SpatialGate(1, name="gate")
    config = gate.get_config()
    assert config["kernel_size"] == 1 and config["name"] == "gate"
    x = np.random.default_rng(4).standard_normal((2, 3, 3, 8)).astype(np.float32)
    gate.build(x.shape)
    gate.conv.bias.assign(np.array([0.1], np.float32))
    want = arr(gate(x))
    clone = SpatialGate.from_config(config)
    assert clone.get_config() == config
    clone.build(x.shape)
    clone.set_weights(gate.get_weights())
    np.testing.assert_array_equal(arr(clone(x)), want)
    assert SpatialGate().get_config()["kernel_size"] == 3                 # the default
    for bad in (0, -1):
        with pytest.raises(ValueError, match="kernel_size"):
            SpatialGate(bad)
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        SpatialGate()(np.ones((2, 3, 8), np.float32))
    with pytest.raises(ValueError, match="batch, height, width, channels"):
        SpatialGate()(keras.Input((3, 8)))


# --------------------------------------------------------------------------- DiscreteHash
def hash_inputs(rng) -> np.ndarray:
    """Random values plus zeros (both signs), exact +-1, large and tiny magnitudes."""
    special = np.array([0.0, -0.0, 1.0, -1.0, 1e8, -1e8, 1e-30, -1e-30, 0.999999, -1.000001,
                        1.5, -2.0, 3e38, -3e38], np.float32)
    x = rng.standard_normal(6 * 14).astype(np.float32) * 2
    x[:14] = special
    return rng.permutation(x).reshape(6, 14)


@pytest.mark.parametrize("backward", ["identity", "clipped"])
def test_discrete_hash_forward_is_exactly_sign(backward):
    x = hash_inputs(np.random.default_rng(5))
    assert (x == 0).sum() >= 2 and (np.abs(x) >= 1e8).sum() >= 4 and (x < 0).any()
    out = arr(DiscreteHash(backward)(x))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, sign(x).astype(np.float32))
    assert set(np.unique(out)) == {-1.0, 1.0}
    symbolic = DiscreteHash(backward)(keras.Input((14,)))
    assert tuple(symbolic.shape) == (None, 14)


def surrogate_gradient(layer, x, g):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
        loss = tf.reduce_sum(out * g)
    return arr(out), arr(tape.gradient(loss, x))


def test_discrete_hash_identity_backward_is_the_upstream_gradient():
    rng = np.random.default_rng(6)
    x = hash_inputs(rng)
    g = rng.standard_normal(x.shape).astype(np.float32)
    out, grad = surrogate_gradient(DiscreteHash(), x, g)
    np.testing.assert_array_equal(out, sign(x))
    np.testing.assert_array_equal(grad, g)                    # exactly g, even at 1e8 and 0


def test_discrete_hash_clipped_backward_is_masked_at_one():
    rng = np.random.default_rng(7)
    x = hash_inputs(rng)
    g = rng.standard_normal(x.shape).astype(np.float32)
    out, grad = surrogate_gradient(DiscreteHash("clipped"), x, g)
    np.testing.assert_array_equal(out, sign(x))
    inside = np.abs(x.astype(np.float64)) <= 1.0              # |h| = 1 exactly is inside
    np.testing.assert_array_equal(grad, np.where(inside, g, 0.0).astype(np.float32))
    for value, passes in ((1.0, True), (-1.0, True), (0.0, True), (0.999999, True),
                          (-1.000001, False), (1.5, False), (1e8, False), (-3e38, False)):
        position = np.argwhere(x == value)[0]
        assert (grad[tuple(position)] != 0) == passes, value


def test_discrete_hash_without_binary_is_tanh():
    rng = np.random.default_rng(8)
    x = rng.uniform(-3, 3, (5, 9)).astype(np.float32)
    x[0, :3] = (0.0, 20.0, -20.0)
    g = rng.standard_normal(x.shape).astype(np.float32)
    for backward in ("identity", "clipped"):                  # backward is unused without binary
        out, grad = surrogate_gradient(DiscreteHash(backward, binary=False), x, g)
        t = np.tanh(x.astype(np.float64))
        np.testing.assert_allclose(out, t, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(grad, g * (1.0 - t ** 2), rtol=1e-5, atol=1e-7)
    assert not set(np.unique(out)) <= {-1.0, 1.0}


def test_discrete_hash_config_round_trip_and_errors():
    layer = DiscreteHash("clipped", binary=False, name="dh")
    config = layer.get_config()
    assert (config["backward"], config["binary"], config["name"]) == ("clipped", False, "dh")
    clone = DiscreteHash.from_config(config)
    assert clone.get_config() == config
    x = np.random.default_rng(9).standard_normal((3, 5)).astype(np.float32)
    np.testing.assert_array_equal(arr(clone(x)), arr(layer(x)))
    default = DiscreteHash().get_config()
    assert (default["backward"], default["binary"]) == ("identity", True)
    assert DiscreteHash.from_config(default).get_config() == default
    built = DiscreteHash()
    built(x)
    assert built.weights == []                                # no weights at all
    for bad in ("x", "straight_through", None):
        with pytest.raises(ValueError, match="backward"):
            DiscreteHash(bad)


# --------------------------------------------------------------------------- DiscreteIdentityHead
def built_head(num_classes, bits, scale, rng, zeros=True):
    head = DiscreteIdentityHead(num_classes, scale)
    head.build((None, bits))
    v = rng.standard_normal((num_classes, bits)).astype(np.float32)
    if zeros:
        v[0, :2] = 0.0                                        # 0 -> +1 centers
        v[-1, -1] = -0.0
    head.centers.assign(v)
    return head, v


@pytest.mark.parametrize("num_classes, bits, scale", [(5, 12, 16.0), (3, 48, 10.0), (7, 7, 2.5)])
def test_identity_head_logits_match_numpy(num_classes, bits, scale):
    rng = np.random.default_rng(10)
    head, v = built_head(num_classes, bits, scale, rng)
    assert tuple(head.centers.shape) == (num_classes, bits)
    assert len(head.trainable_variables) == 1                 # no bias
    centers = sign(v)
    np.testing.assert_array_equal(arr(head.binary_centers()), centers)
    # Real-valued inputs (the tanh ablation feeds these).
    h = rng.standard_normal((4, bits)).astype(np.float32)
    np.testing.assert_allclose(arr(head(h)), scale * h.astype(np.float64) @ centers.T / bits,
                               rtol=1e-5, atol=1e-5)
    # Binary inputs: the scaled Hamming similarity.
    b = sign(rng.standard_normal((6, bits))).astype(np.float32)
    b[0] = centers[0]                                         # distance 0 to center 0
    b[1] = -centers[-1]                                       # distance K to the last center
    logits = arr(head(b))
    assert logits.shape == (6, num_classes)
    want = scale * (1.0 - 2.0 * hamming(b, centers) / bits)
    np.testing.assert_allclose(logits, want, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(logits, scale * b.astype(np.float64) @ centers.T / bits,
                               rtol=1e-6, atol=1e-5)
    assert logits[0, 0] == pytest.approx(scale) and logits[1, -1] == pytest.approx(-scale)
    assert np.all(np.abs(logits) <= scale * (1 + 1e-6))


def test_identity_head_center_gradient_is_straight_through():
    rng = np.random.default_rng(11)
    num_classes, bits, scale = 6, 10, 16.0
    head, _ = built_head(num_classes, bits, scale, rng)
    for b in (sign(rng.standard_normal((5, bits))), rng.standard_normal((5, bits))):
        b = tf.constant(b, tf.float32)
        g = rng.standard_normal((5, num_classes)).astype(np.float32)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(b)
            logits = head(b)
            loss = tf.reduce_sum(logits * g)
        grad_v = arr(tape.gradient(loss, head.centers))
        grad_b = arr(tape.gradient(loss, b))
        want_v = scale / bits * g.astype(np.float64).T @ arr(b).astype(np.float64)
        np.testing.assert_allclose(grad_v, want_v, rtol=1e-5, atol=1e-5)
        # The codes' gradient uses the binary centers: scale / K * G sign(V).
        want_b = scale / bits * g.astype(np.float64) @ sign(arr(head.centers))
        np.testing.assert_allclose(grad_b, want_b, rtol=1e-5, atol=1e-5)
    # d loss / d V equals d loss / d sign(V) with sign(V) as a free (constant) matrix.
    c = tf.constant(sign(arr(head.centers)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(c)
        loss = tf.reduce_sum(scale * tf.matmul(b, c, transpose_b=True) / bits * g)
    np.testing.assert_allclose(grad_v, arr(tape.gradient(loss, c)), rtol=1e-6, atol=1e-6)


def test_identity_head_symbolic_config_round_trip_and_errors():
    head = DiscreteIdentityHead(9, 12.0, name="ih")
    assert tuple(head(keras.Input((24,))).shape) == (None, 9)
    assert tuple(head.compute_output_shape((None, 24))) == (None, 9)
    config = head.get_config()
    assert (config["num_classes"], config["scale"], config["name"]) == (9, 12.0, "ih")
    clone = DiscreteIdentityHead.from_config(config)
    assert clone.get_config() == config
    rng = np.random.default_rng(12)
    head.centers.assign(rng.standard_normal((9, 24)).astype(np.float32))
    x = sign(rng.standard_normal((4, 24))).astype(np.float32)
    clone.build((None, 24))
    clone.set_weights(head.get_weights())
    np.testing.assert_array_equal(arr(clone(x)), arr(head(x)))
    custom = DiscreteIdentityHead(3, center_initializer=keras.initializers.Constant(-0.5))
    clone = DiscreteIdentityHead.from_config(custom.get_config())
    assert clone.get_config() == custom.get_config()
    assert DiscreteIdentityHead(3).get_config()["scale"] == 16.0          # the default s
    np.testing.assert_array_equal(arr(clone(np.ones((2, 4), np.float32))), -16.0)
    for kwargs, message in ((dict(num_classes=0), "num_classes"),
                            (dict(num_classes=-2), "num_classes"),
                            (dict(num_classes=3, scale=0.0), "scale"),
                            (dict(num_classes=3, scale=-1.0), "scale"),
                            (dict(num_classes=3, scale=float("nan")), "scale")):
        with pytest.raises(ValueError, match=message):
            DiscreteIdentityHead(**kwargs)
    with pytest.raises(ValueError, match="known code length"):
        DiscreteIdentityHead(3)(keras.Input((None,)))


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((3, 3, 4))
    x = SpatialGate(3, name="gate")(inputs)
    x = keras.layers.Flatten()(x)
    x = DiscreteHash("clipped", name="hash")(keras.layers.Dense(10)(x))
    model = keras.Model(inputs, DiscreteIdentityHead(5, 8.0, name="head")(x))
    data = np.random.default_rng(13).standard_normal((3, 3, 3, 4)).astype(np.float32)
    model.save(tmp_path / "layers.keras")
    loaded = keras.models.load_model(tmp_path / "layers.keras")
    assert isinstance(loaded.get_layer("gate"), SpatialGate)
    assert loaded.get_layer("hash").backward == "clipped"
    assert loaded.get_layer("head").scale == 8.0
    np.testing.assert_array_equal(arr(loaded(data)), arr(model(data)))
