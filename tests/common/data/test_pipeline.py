"""ArrayPipeline / epoch_order: batch order, remainder, seeded per-epoch shuffles."""

from __future__ import annotations

import numpy as np
import pytest

from common.data import ArrayPipeline, epoch_order

N = 600
BATCH = 256


def _encoded(n: int = N):
    """Image i is filled with the value i; its label is 1000 + i (pairing is checkable)."""
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                             (n, 32, 32, 3)).copy()
    labels = 1000 + np.arange(n, dtype=np.int64)
    return images, labels


def _collect(ds):
    """Batches of one epoch as lists of numpy arrays; checks pairing on the way."""
    images, labels = [], []
    for img, lab in ds:
        img, lab = img.numpy(), lab.numpy()
        assert img.dtype == np.float32 and lab.dtype == np.int64
        assert img.shape[1:] == (32, 32, 3) and len(img) == len(lab)
        # every pixel of an image holds its index, and the label is 1000 + that index
        first = img[:, 0, 0, 0]
        assert np.all(img == first[:, None, None, None])
        np.testing.assert_array_equal(lab, 1000 + first.astype(np.int64))
        images.append(img)
        labels.append(lab)
    return images, labels


def _order(ds):
    _, labels = _collect(ds)
    return np.concatenate(labels) - 1000


@pytest.fixture(scope="module")
def data():
    return _encoded()


def test_no_shuffle_file_order_with_remainder_last(data):
    pipe = ArrayPipeline(*data, batch_size=BATCH)
    assert pipe.steps_per_epoch() == 3
    images, labels = _collect(pipe.epoch(0))
    assert [len(b) for b in labels] == [256, 256, 88]
    np.testing.assert_array_equal(np.concatenate(labels), data[1])
    np.testing.assert_array_equal(np.concatenate(images), data[0])
    # Every epoch is the same without shuffling.
    np.testing.assert_array_equal(_order(pipe.epoch(5)), np.arange(N))


def test_drop_remainder(data):
    pipe = ArrayPipeline(*data, batch_size=BATCH, drop_remainder=True)
    assert pipe.steps_per_epoch() == 2
    _, labels = _collect(pipe.epoch(0))
    assert [len(b) for b in labels] == [256, 256]
    np.testing.assert_array_equal(np.concatenate(labels) - 1000, np.arange(512))


def test_drop_remainder_with_shuffle_drops_a_different_tail_each_epoch(data):
    pipe = ArrayPipeline(*data, batch_size=BATCH, drop_remainder=True, shuffle=True, seed=3)
    orders = [_order(pipe.epoch(e)) for e in range(2)]
    for order in orders:
        assert len(order) == 512 and len(np.unique(order)) == 512
    assert set(orders[0]) != set(orders[1])


def test_exact_multiple_has_no_remainder_batch():
    pipe = ArrayPipeline(*_encoded(512), batch_size=BATCH)
    assert pipe.steps_per_epoch() == 2
    assert [len(b) for b in _collect(pipe.epoch(0))[1]] == [256, 256]


def test_steps_per_epoch_small_cases():
    assert ArrayPipeline(*_encoded(5), batch_size=10).steps_per_epoch() == 1
    assert ArrayPipeline(*_encoded(5), batch_size=10, drop_remainder=True).steps_per_epoch() == 0
    assert ArrayPipeline(*_encoded(5), batch_size=1).steps_per_epoch() == 5
    pipe = ArrayPipeline(*_encoded(5), batch_size=2)
    assert len(_collect(pipe.epoch(0))[1]) == pipe.steps_per_epoch() == 3


def test_shuffle_each_epoch_is_a_permutation_and_epochs_differ(data):
    pipe = ArrayPipeline(*data, batch_size=BATCH, shuffle=True, seed=7)
    orders = []
    for epoch in range(3):
        _, labels = _collect(pipe.epoch(epoch))
        assert [len(b) for b in labels] == [256, 256, 88]
        order = np.concatenate(labels) - 1000
        np.testing.assert_array_equal(np.sort(order), np.arange(N))  # each example once
        assert not np.array_equal(order, np.arange(N))
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    # The dataset order is exactly epoch_order.
    np.testing.assert_array_equal(orders[2], epoch_order(N, 2, True, 7))


def test_shuffle_is_a_function_of_seed_and_epoch_resume(data):
    first = ArrayPipeline(*data, batch_size=BATCH, shuffle=True, seed=11)
    for epoch in range(3):  # an uninterrupted run goes through epochs 0..2
        _order(first.epoch(epoch))
    uninterrupted = _order(first.epoch(3))
    resumed = ArrayPipeline(*data, batch_size=BATCH, shuffle=True, seed=11)  # fresh object
    np.testing.assert_array_equal(_order(resumed.epoch(3)), uninterrupted)
    # and batch by batch, images included
    a_images, _ = _collect(first.epoch(3))
    b_images, _ = _collect(resumed.epoch(3))
    for a, b in zip(a_images, b_images, strict=True):
        np.testing.assert_array_equal(a, b)


def test_other_seed_other_order(data):
    a = _order(ArrayPipeline(*data, batch_size=BATCH, shuffle=True, seed=1).epoch(0))
    b = _order(ArrayPipeline(*data, batch_size=BATCH, shuffle=True, seed=2).epoch(0))
    assert not np.array_equal(a, b)


def test_deterministic_mode_same_batches_on_two_iterations(data):
    pipe = ArrayPipeline(*data, batch_size=64, shuffle=True, seed=5, deterministic=True)
    ds = pipe.epoch(1)
    first_images, first_labels = _collect(ds)
    second_images, second_labels = _collect(ds)
    for a, b in zip(first_labels, second_labels, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first_images, second_images, strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_deterministic_mode_still_covers_every_example_paired(data):
    pipe = ArrayPipeline(*data, batch_size=64, shuffle=True, seed=5, deterministic=False)
    order = _order(pipe.epoch(0))  # _collect checks the image/label pairing
    np.testing.assert_array_equal(np.sort(order), np.arange(N))


def test_inputs_converted_float32_int64():
    images, labels = _encoded(10)
    pipe = ArrayPipeline(images.astype(np.float64), labels.astype(np.int32), batch_size=4)
    _, got = _collect(pipe.epoch(0))
    np.testing.assert_array_equal(np.concatenate(got), labels)


def test_errors():
    images, labels = _encoded(10)
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        ArrayPipeline(images, labels[:9])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            ArrayPipeline(images, labels, batch_size=bad)


# ------------------------------------------------------------------------ epoch_order


def test_epoch_order_without_shuffle_is_file_order():
    order = epoch_order(7, epoch=3, shuffle=False, seed=9)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(order, np.arange(7))


def test_epoch_order_shuffle_is_seeded_permutation():
    a = epoch_order(1000, 0, True, 42)
    assert a.dtype == np.int64
    np.testing.assert_array_equal(np.sort(a), np.arange(1000))
    np.testing.assert_array_equal(a, epoch_order(1000, 0, True, 42))  # reproducible
    assert not np.array_equal(a, epoch_order(1000, 1, True, 42))     # per epoch
    assert not np.array_equal(a, epoch_order(1000, 0, True, 43))     # per seed
    # (seed, epoch) is not collapsed into one number: (1, 2) != (2, 1), (0, 1) != (1, 0)
    assert not np.array_equal(epoch_order(1000, 2, True, 1), epoch_order(1000, 1, True, 2))
    assert not np.array_equal(epoch_order(1000, 1, True, 0), epoch_order(1000, 0, True, 1))


def test_epoch_order_stable_across_releases():
    # Pinned values: a change here silently changes every resumed run's batches.
    np.testing.assert_array_equal(epoch_order(10, 0, True, 0), [4, 6, 2, 7, 3, 5, 9, 0, 8, 1])
    np.testing.assert_array_equal(epoch_order(10, 3, True, 7), [3, 5, 4, 7, 8, 0, 9, 2, 1, 6])


def test_epoch_order_small_sizes():
    assert epoch_order(0, 0, True, 1).shape == (0,)
    assert epoch_order(0, 0, False, 1).shape == (0,)
    np.testing.assert_array_equal(epoch_order(1, 5, True, 1), [0])


def test_epoch_order_accepts_numpy_ints():
    np.testing.assert_array_equal(epoch_order(50, np.int64(2), True, np.int32(3)),
                                  epoch_order(50, 2, True, 3))
