"""CenterLoss: loss, gradients and the original's direct center update vs numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from numpy_reference import center_loss, center_update_delta


from common.layers import CenterLoss

LABELS = np.array([2, 0, 2, 4, 2, 0])      # 2 three times, 0 twice, 4 once; 1, 3, 5 absent
NUM_CLASSES = 6
DIM = 5




def reference_grads(features, labels, centers, reduction):
    """Analytic d loss / d features and d loss / d centers."""
    diff = np.asarray(features, np.float64) - np.asarray(centers, np.float64)[labels]
    d_features = diff.copy()
    d_centers = np.zeros(np.shape(centers))
    for i, y in enumerate(labels):
        d_centers[y] -= diff[i]
    if reduction == "mean":
        d_features /= len(features)
        d_centers /= len(features)
    return d_features, d_centers




def make_layer(dtype="float64", seed=0, **kwargs):
    layer = CenterLoss(NUM_CLASSES, dtype=dtype, **kwargs)
    layer.build((None, DIM))
    centers = np.random.default_rng(seed).normal(size=(NUM_CLASSES, DIM))
    layer.centers.assign(centers.astype(dtype))
    return layer, centers.astype(dtype)


def features_for(labels, seed=1, dtype="float64"):
    return np.random.default_rng(seed).normal(size=(len(labels), DIM)).astype(dtype)


def test_identity_forward():
    x = np.random.default_rng(0).normal(size=(4, DIM)).astype(np.float32)
    layer = CenterLoss(NUM_CLASSES)
    np.testing.assert_array_equal(layer(x).numpy(), x)
    assert tuple(layer(keras.Input((DIM,))).shape) == (None, DIM)


@pytest.mark.parametrize("num_classes,dim", [(10, 8), (500, 48), (1, 3)])
def test_centers_shape_and_glorot_uniform_init(num_classes, dim):
    layer = CenterLoss(num_classes)
    layer.build((None, dim))
    centers = layer.centers.numpy()
    assert centers.shape == (num_classes, dim)
    bound = np.sqrt(6.0 / (num_classes + dim))
    assert np.all(np.abs(centers) <= bound)
    assert np.unique(centers).size > 1
    if centers.size >= 100:         # a uniform sample spreads over most of [-bound, bound]
        assert centers.max() > 0.8 * bound and centers.min() < -0.8 * bound


def test_trainable_flag():
    layer = CenterLoss(4)
    layer.build((None, 3))
    assert layer.centers.trainable
    assert [w.name for w in layer.trainable_weights] == ["centers"]
    frozen = CenterLoss(4, trainable_centers=False)
    frozen.build((None, 3))
    assert not frozen.centers.trainable
    assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == 1


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_matches_numpy(reduction):
    layer, centers = make_layer(reduction=reduction)
    features = features_for(LABELS)
    got = layer.loss(features, LABELS)
    assert got.shape == ()
    np.testing.assert_allclose(got.numpy(), center_loss(features, LABELS, centers, reduction),
                               rtol=1e-13, atol=0)


def test_sum_is_batch_size_times_mean():
    features = features_for(LABELS)
    total = make_layer(reduction="sum")[0].loss(features, LABELS).numpy()
    mean = make_layer(reduction="mean")[0].loss(features, LABELS).numpy()
    np.testing.assert_allclose(total, len(LABELS) * mean, rtol=1e-13)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_float32_and_label_formats(reduction):
    layer, centers = make_layer(dtype="float32", reduction=reduction)
    features = features_for(LABELS, dtype="float32")
    expected = center_loss(features, LABELS, centers, reduction)
    for labels in (LABELS, LABELS.astype(np.int64), LABELS.astype(np.int32),
                   LABELS.reshape(-1, 1), tf.constant(LABELS, tf.int64)):
        got = layer.loss(features, labels).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_loss_zero_at_centers():
    layer, centers = make_layer()
    assert layer.loss(centers[LABELS], LABELS).numpy() == 0.0


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_gradients_match_analytic(reduction):
    layer, centers = make_layer(reduction=reduction)
    features = tf.constant(features_for(LABELS))
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss = layer.loss(features, LABELS)
    d_features, d_centers = tape.gradient(loss, [features, layer.centers])
    exp_features, exp_centers = reference_grads(features.numpy(), LABELS, centers, reduction)
    np.testing.assert_allclose(d_features.numpy(), exp_features, rtol=0, atol=1e-13)
    np.testing.assert_allclose(tf.convert_to_tensor(d_centers).numpy(), exp_centers,
                               rtol=0, atol=1e-13)
    # Absent classes get no gradient.
    absent = sorted(set(range(NUM_CLASSES)) - set(LABELS))
    assert np.all(tf.convert_to_tensor(d_centers).numpy()[absent] == 0)


def test_center_update_matches_original():
    layer, centers = make_layer()
    features = features_for(LABELS)
    got = layer.center_update(features, LABELS).numpy()
    expected = center_update_delta(features, LABELS, centers)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)
    # Hand-check the label that repeats three times: sum over its rows / (1 + 3).
    rows = features[LABELS == 2]
    assert len(rows) == 3
    np.testing.assert_allclose(got[2], (3 * centers[2] - rows.sum(0)) / 4, rtol=0, atol=1e-14)
    np.testing.assert_allclose(got[4], (centers[4] - features[LABELS == 4][0]) / 2, atol=1e-14)
    # Classes absent from the batch are not touched.
    for absent in (1, 3, 5):
        assert np.all(got[absent] == 0)


def test_center_update_float32_and_label_formats():
    layer, centers = make_layer(dtype="float32")
    features = features_for(LABELS, dtype="float32")
    expected = center_update_delta(features.astype(np.float64), LABELS, centers)
    for labels in (LABELS, LABELS.reshape(-1, 1), tf.constant(LABELS, tf.int64)):
        got = layer.center_update(features, labels).numpy()
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_center_update_has_no_gradient_to_features():
    layer, _ = make_layer()
    features = tf.constant(features_for(LABELS))
    with tf.GradientTape() as tape:
        tape.watch(features)
        delta = tf.reduce_sum(layer.center_update(features, LABELS))
    assert tape.gradient(delta, features) is None


def test_apply_center_update_subtracts_exactly_the_delta():
    layer, centers = make_layer()
    features = features_for(LABELS)
    delta = layer.center_update(features, LABELS).numpy()
    layer.apply_center_update(features, LABELS)
    after = layer.centers.numpy()
    np.testing.assert_array_equal(after, centers - delta)
    np.testing.assert_allclose(after, centers - center_update_delta(features, LABELS, centers),
                               rtol=0, atol=1e-14)
    for absent in (1, 3, 5):
        np.testing.assert_array_equal(after[absent], centers[absent])
    # A single example of class y moves its center halfway: c - (c - f)/2 = (c + f)/2.
    layer2, centers2 = make_layer()
    f = features_for([3], seed=9)
    layer2.apply_center_update(f, [3])
    np.testing.assert_allclose(layer2.centers.numpy()[3], (centers2[3] + f[0]) / 2, atol=1e-15)


def test_apply_center_update_inside_tf_function():
    layer, centers = make_layer(dtype="float32")
    features = features_for(LABELS, dtype="float32")
    tf.function(layer.apply_center_update)(tf.constant(features), tf.constant(LABELS))
    expected = centers - center_update_delta(features.astype(np.float64), LABELS, centers)
    np.testing.assert_allclose(layer.centers.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("num_classes", [0, -3])
def test_bad_num_classes_raises(num_classes):
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        CenterLoss(num_classes)


@pytest.mark.parametrize("reduction", ["max", "SUM", None, "none"])
def test_bad_reduction_raises(reduction):
    with pytest.raises(ValueError, match="reduction must be one of"):
        CenterLoss(3, reduction=reduction)


def test_config_round_trip():
    layer = CenterLoss(7, reduction="mean", trainable_centers=False, name="cl")
    config = layer.get_config()
    assert config["num_classes"] == 7 and config["reduction"] == "mean"
    assert config["trainable_centers"] is False and config["name"] == "cl"
    clone = CenterLoss.from_config(config)
    assert (clone.num_classes, clone.reduction, clone.trainable_centers) == (7, "mean", False)
    assert clone.get_config() == config
    defaults = CenterLoss(3).get_config()
    assert defaults["reduction"] == "sum" and defaults["trainable_centers"] is True


def test_keras_save_and_reload_keeps_centers(tmp_path):
    inputs = keras.Input((4,))
    features = keras.layers.Dense(DIM, name="dense")(inputs)
    outputs = CenterLoss(NUM_CLASSES, reduction="mean", name="center_loss")(features)
    model = keras.Model(inputs, outputs)
    layer = model.get_layer("center_loss")
    centers = np.random.default_rng(5).normal(size=(NUM_CLASSES, DIM)).astype(np.float32)
    layer.centers.assign(centers)
    layer.apply_center_update(features_for(LABELS, dtype="float32"), LABELS)
    updated = layer.centers.numpy()
    assert not np.array_equal(updated, centers)
    x = np.random.default_rng(6).normal(size=(3, 4)).astype(np.float32)
    before = model.predict(x, verbose=0)

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    layer2 = reloaded.get_layer("center_loss")
    assert isinstance(layer2, CenterLoss)
    assert (layer2.num_classes, layer2.reduction, layer2.trainable_centers) == (
        NUM_CLASSES, "mean", True)
    np.testing.assert_array_equal(layer2.centers.numpy(), updated)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), before)
    assert any(w is layer2.centers for w in reloaded.trainable_weights)
