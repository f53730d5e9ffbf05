"""LSH and ITQ baselines: against direct numpy references and their defining properties."""

from __future__ import annotations

import numpy as np
import pytest

from common.methods.baselines import ITQ, LSH, binarize
from common.metrics import retrieval_metrics


def _clustered(seed=0, classes=10, per_class=30, dim=64, noise=0.6):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim)) * 2.0
    labels = np.repeat(np.arange(classes), per_class)
    x = centers[labels] + noise * rng.standard_normal((len(labels), dim)) + 5.0  # off-centre
    return x.astype(np.float32), labels


def test_binarize_maps_zero_to_plus_one():
    np.testing.assert_array_equal(binarize(np.array([[-0.5, 0.0, 2.0]])), [[-1, 1, 1]])
    assert binarize(np.zeros((1, 3))).dtype == np.int8


def test_lsh_is_sign_of_centred_gaussian_projections():
    x, _ = _clustered()
    lsh = LSH(16, seed=3).fit(x)
    expected_directions = np.random.default_rng(3).standard_normal((64, 16))
    np.testing.assert_array_equal(lsh.directions, expected_directions)
    np.testing.assert_allclose(lsh.project(x[:5]),
                               (x[:5].astype(np.float64) - x.astype(np.float64).mean(0))
                               @ expected_directions, rtol=1e-12)
    np.testing.assert_array_equal(LSH(16, seed=3).fit(x).project(x), lsh.project(x))
    assert not np.array_equal(LSH(16, seed=4).fit(x).project(x), lsh.project(x))


def test_itq_pca_matches_svd_and_rotation_is_orthogonal():
    x, _ = _clustered()
    itq = ITQ(12, iterations=20, seed=1).fit(x)
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    # Same subspace as the top-12 right singular vectors (signs/order within ties free).
    projector_svd = vt[:12].T @ vt[:12]
    projector_itq = itq.components @ itq.components.T
    np.testing.assert_allclose(projector_itq, projector_svd, atol=1e-8)
    np.testing.assert_allclose(itq.rotation.T @ itq.rotation, np.eye(12), atol=1e-10)


def test_itq_quantization_loss_never_increases_and_beats_the_unrotated_pca():
    x, _ = _clustered(seed=2)
    itq = ITQ(16, iterations=50, seed=0).fit(x)
    losses = np.array(itq.losses)
    assert len(losses) == 50
    assert np.all(np.diff(losses) <= 1e-9 * losses[0])
    v = (x.astype(np.float64) - itq.mean) @ itq.components
    pca_loss = np.sum((np.where(v >= 0, 1.0, -1.0) - v) ** 2)
    assert losses[-1] < pca_loss


def test_itq_codes_retrieve_clusters_far_above_chance():
    x, y = _clustered(seed=5, noise=1.5)
    itq = ITQ(16, seed=0).fit(x)
    lsh = LSH(16, seed=0).fit(x)
    chance = 0.1  # 10 equal classes
    for model in (itq, lsh):
        codes = model.project(x)
        assert retrieval_metrics(codes, y, codes, y)["map"] > 3 * chance


@pytest.mark.parametrize("make, message", [
    (lambda: LSH(0), "num_bits must be >= 1"),
    (lambda: ITQ(0), "num_bits must be >= 1"),
    (lambda: ITQ(8, iterations=-1), "iterations must be >= 0"),
    (lambda: ITQ(100).fit(np.ones((50, 64))), r"num_bits <= min\(rows, width\) = 50"),
    (lambda: LSH(8).fit(np.ones((0, 4))), "non-empty"),
    (lambda: LSH(8).fit(np.ones((5, 4))).project(np.ones((2, 5))), "rows of width 4"),
])
def test_bad_input_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_project_before_fit_raises():
    with pytest.raises(RuntimeError, match="fit"):
        ITQ(4).project(np.ones((2, 8)))
