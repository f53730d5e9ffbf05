"""DFH's loss terms against numpy, and their gradients against the closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from dfh_tf import losses

RNG = np.random.default_rng(11)


def _grad(fn, x):
    x = tf.Variable(x, dtype=tf.float32)
    with tf.GradientTape() as tape:
        value = fn(x)
    return float(value), tape.gradient(value, x).numpy()


# ------------------------------------------------------------------------- the pair loss
def _np_distances(h):
    b, k = h.shape
    return np.array([[np.sum((h[i] - h[j]) ** 2) / (4 * k) for j in range(b)] for i in range(b)])


def _np_pair_loss(h, y, m):
    d = _np_distances(h)
    pos = [d[i, j] for i in range(len(y)) for j in range(i + 1, len(y)) if y[i] == y[j]]
    neg = [max(0.0, m - d[i, j]) for i in range(len(y)) for j in range(i + 1, len(y))
           if y[i] != y[j]]
    return (np.mean(pos) if pos else 0.0) + (np.mean(neg) if neg else 0.0)


def test_distances_are_hamming_over_bits_for_binary_codes():
    codes = RNG.choice([-1.0, 1.0], (7, 24))
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1) / 24
    np.testing.assert_allclose(losses.pair_distances(codes).numpy(), hamming, atol=1e-6)
    relaxed = RNG.uniform(-1, 1, (5, 12))
    np.testing.assert_allclose(losses.pair_distances(relaxed).numpy(), _np_distances(relaxed),
                               atol=1e-6)


@pytest.mark.parametrize("labels", [[0, 0, 1, 2, 1, 0], [0, 1, 2, 3, 4, 5], [3, 3, 3, 3, 3, 3]])
def test_pair_loss_equals_numpy_including_batches_without_positives_or_negatives(labels):
    h = RNG.uniform(-1, 1, (6, 16)).astype(np.float32)
    y = np.array(labels)
    for margin in (0.5, 0.9):
        assert losses.pair_loss(h, y, margin).numpy() == pytest.approx(
            _np_pair_loss(h, y, margin), rel=1e-5, abs=1e-7)


def test_pair_loss_gradient_is_the_closed_form():
    """d d_ij / d h_i = (h_i - h_j) / (2K): pulled with weight 1/P over positive pairs,
    pushed with weight -1/N over negative pairs closer than the margin."""
    h = RNG.uniform(-1, 1, (6, 8)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 2, 0])
    m = 0.55
    value, grad = _grad(lambda x: losses.pair_loss(x, y, m), h)
    d, k = _np_distances(h), h.shape[1]
    pairs = [(i, j) for i in range(6) for j in range(i + 1, 6)]
    n_pos = sum(y[i] == y[j] for i, j in pairs)
    n_neg = len(pairs) - n_pos
    expected = np.zeros_like(h, dtype=np.float64)
    for i, j in pairs:
        w = 1 / n_pos if y[i] == y[j] else (-1 / n_neg if d[i, j] < m else 0.0)
        expected[i] += w * (h[i] - h[j]) / (2 * k)
        expected[j] += w * (h[j] - h[i]) / (2 * k)
    assert value == pytest.approx(_np_pair_loss(h, y, m), rel=1e-5)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------------- the sign term
def test_sign_loss_is_csq_cross_entropy_and_its_gradient_pushes_towards_the_center():
    a = RNG.normal(0, 2, (5, 12)).astype(np.float32)
    y = np.array([0, 2, 1, 2, 0])
    centers = RNG.choice([-1.0, 1.0], (3, 12)).astype(np.float32)
    c = centers[y]
    h = np.tanh(a.astype(np.float64))
    bce = -((1 + c) / 2 * np.log((1 + h) / 2) + (1 - c) / 2 * np.log((1 - h) / 2))
    value, grad = _grad(lambda x: losses.sign_loss(x, y, centers), a)
    assert value == pytest.approx(bce.mean(), rel=1e-5)
    expected = -2 * c / (1 + np.exp(2 * c * a)) / a.size
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-9)
    assert np.all(np.sign(-grad) == c)   # descent moves every bit towards its center's sign


def test_sign_loss_stays_finite_for_saturated_activations():
    a = np.array([[80.0, -80.0]], np.float32)
    centers = np.array([[-1.0, 1.0]], np.float32)
    assert losses.sign_loss(a, [0], centers).numpy() == pytest.approx(160.0, rel=1e-5)


def test_hash_centers_are_binary_reproducible_and_kept_apart():
    centers = losses.hash_centers(311, 12, seed=0)
    assert centers.shape == (311, 12) and centers.dtype == np.int8
    assert set(np.unique(centers)) == {-1, 1}
    np.testing.assert_array_equal(centers, losses.hash_centers(311, 12, seed=0))
    assert not np.array_equal(centers, losses.hash_centers(311, 12, seed=1))
    distance = (12 - centers.astype(int) @ centers.T.astype(int)) // 2
    np.fill_diagonal(distance, 99)
    assert distance.min() >= 2       # all 311 distinct at 12 bits, no neighbours at distance 1
    plain = np.random.default_rng(0).choice([-1, 1], (311, 12))
    plain_distance = (12 - plain @ plain.T) // 2
    np.fill_diagonal(plain_distance, 99)
    assert plain_distance.min() == 0  # what plain random centers would give (collisions)
    wide = losses.hash_centers(311, 48)
    wide_distance = (48 - wide.astype(int) @ wide.T.astype(int)) // 2
    np.fill_diagonal(wide_distance, 99)
    assert wide_distance.min() >= 12
    with pytest.raises(ValueError, match="num_classes"):
        losses.hash_centers(0, 12)


# ------------------------------------------------------------------------- quantization
def test_quantization_terms_and_their_gradients():
    h = RNG.uniform(-0.99, 0.99, (4, 6)).astype(np.float32)
    gap = np.abs(h) - 1
    value, grad = _grad(lambda x: losses.quantization_loss(x, "quadratic"), h)
    assert value == pytest.approx(np.mean(gap ** 2), rel=1e-5)
    np.testing.assert_allclose(grad, 2 * gap * np.sign(h) / h.size, rtol=1e-5)
    value, grad = _grad(lambda x: losses.quantization_loss(x, "first_order"), h)
    assert value == pytest.approx(np.mean(np.abs(gap)), rel=1e-5)
    np.testing.assert_allclose(grad, np.sign(gap) * np.sign(h) / h.size, rtol=1e-5)
    with pytest.raises(ValueError, match="quantization must be one of"):
        losses.quantization_loss(h, "cubic")


def test_quadratic_gradient_fades_at_the_binary_values_where_first_order_does_not():
    h = np.array([[0.05, 0.5, 0.999]], np.float32)
    _, quadratic = _grad(lambda x: losses.quantization_loss(x, "quadratic"), h)
    _, first = _grad(lambda x: losses.quantization_loss(x, "first_order"), h)
    assert abs(quadratic[0, 2]) < 0.01 * abs(first[0, 2])
    assert abs(quadratic[0, 0]) > abs(quadratic[0, 1]) > abs(quadratic[0, 2])
    np.testing.assert_allclose(np.abs(first), 1 / 3)


# ------------------------------------------------------------------------- distillation
def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_distillation_is_hinton_kl_and_only_the_student_learns():
    s = RNG.normal(0, 3, (4, 5)).astype(np.float32)
    t = RNG.normal(0, 3, (4, 5)).astype(np.float32)
    for temperature in (1.0, 4.0):
        p, q = _softmax(t / temperature), _softmax(s / temperature)
        kl = np.sum(p * (np.log(p) - np.log(q)), 1).mean() * temperature ** 2
        student = tf.Variable(s)
        teacher = tf.Variable(t)
        with tf.GradientTape() as tape:
            value = losses.distillation_loss(student, teacher, temperature)
        g_s, g_t = tape.gradient(value, [student, teacher])
        assert float(value) == pytest.approx(kl, rel=1e-4)
        np.testing.assert_allclose(g_s.numpy(), temperature * (q - p) / len(s), rtol=1e-4,
                                   atol=1e-7)
        assert g_t is None
    assert float(losses.distillation_loss(t, t)) == pytest.approx(0.0, abs=1e-6)


def test_similarity_distillation_matches_cosine_relations_and_only_the_codes_learn():
    h = RNG.normal(0, 1, (5, 8)).astype(np.float32)
    t = RNG.normal(0, 3, (5, 7)).astype(np.float32)
    hn = h / np.linalg.norm(h, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    expected = np.mean((hn @ hn.T - tn @ tn.T) ** 2)
    codes, teacher = tf.Variable(h), tf.Variable(t)
    with tf.GradientTape() as tape:
        value = losses.similarity_distillation_loss(codes, teacher)
    g_h, g_t = tape.gradient(value, [codes, teacher])
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert g_t is None and np.all(np.isfinite(g_h.numpy())) and np.abs(g_h.numpy()).max() > 0
    # codes whose relations are the teacher's cost nothing, whatever their scale
    assert float(losses.similarity_distillation_loss(3.0 * tn, t)) == pytest.approx(0, abs=1e-6)
    # binary codes: cos = 1 - 2 d / K, so one identity's codes near and another's at K/2 give
    # exactly the relations of a one-hot teacher (cosine 1 within, 0 across identities)
    binary = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, -1, 1, -1]], np.float32)
    one_hot = np.array([[5, 0], [5, 0], [0, 5]], np.float32)
    assert float(losses.similarity_distillation_loss(binary, one_hot)) == pytest.approx(0, abs=1e-6)
    assert float(losses.similarity_distillation_loss(np.zeros((0, 4), np.float32),
                                                     np.zeros((0, 2), np.float32))) == 0.0


def test_the_distillation_setting_chooses_the_term_and_old_runs_read_as_logits():
    from dfh_tf.method import DFH

    assert DFH.complete_config({"method": "dfh"})["distillation"] == "logits"
    with pytest.raises(ValueError, match="distillation"):
        DFH(distillation="features")
    method = DFH(num_bits=4, width_multiplier=0.0625, feature_epochs=0, distillation="similarity")
    method.build_model(2)
    codes = np.array([[1, 1, 1, 1], [1, -1, 1, -1]], np.float32)
    outputs = {"relaxed_codes": codes, "feature_logits": np.array([[4, 0], [0, 4]], np.float32),
               "logits": np.array([[9, -9], [9, -9]], np.float32)}
    # similarity: the codes are 2 bits apart of 4 (cosine 0) as the teacher's rows are: 0,
    # whatever the code classifier says
    assert float(method._distillation(outputs)) == pytest.approx(0, abs=1e-6)
    logits_method = DFH(num_bits=4, width_multiplier=0.0625, feature_epochs=0)
    assert float(logits_method._distillation(outputs)) > 1.0  # the classifier disagrees
