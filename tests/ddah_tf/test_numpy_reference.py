"""The DDAH numpy references (tests/ddah_numpy_reference.py) checked on hand-computed
cases, so that the DDAH layer, model and loss tests compare with something right."""

from __future__ import annotations

import numpy as np
import pytest

from ddah_numpy_reference import (batch_norm, conv2d, flatten_channel_major, min_max,
                                  quantization, torch_conv_transpose2d)


def test_conv_transpose_reference_by_hand():
    """ConvTranspose2d(1, 1, 3, stride 2, padding 1, output_padding 1), all-ones kernel, on
    [[1, 2], [3, 4]]: input (i, j) covers full-output rows / columns 2i..2i+2 (full 5x5);
    the output is full[1:5, 1:5], i.e. output rows 0..3 see input rows {0}, {0,1}, {1}, {1}."""
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    out = torch_conv_transpose2d(x, np.ones((1, 1, 3, 3)), None, 2, 1, 1)[0, :, :, 0]
    np.testing.assert_array_equal(out, [[1, 3, 2, 2], [4, 10, 6, 6], [3, 7, 4, 4], [3, 7, 4, 4]])


def test_conv_reference_by_hand():
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    out = conv2d(x, np.ones((2, 2, 1, 1)), np.array([0.5]), stride=2)[0, :, :, 0]
    np.testing.assert_array_equal(out, [[0 + 1 + 4 + 5 + 0.5, 2 + 3 + 6 + 7 + 0.5],
                                        [8 + 9 + 12 + 13 + 0.5, 10 + 11 + 14 + 15 + 0.5]])


def test_min_max_and_flatten_references_by_hand():
    x = np.array([[[[1.0], [3.0]], [[2.0], [5.0]]], [[[0.0], [0.0]], [[4.0], [2.0]]]])
    np.testing.assert_allclose(min_max(x)[0, :, :, 0], [[0, 0.5], [0.25, 1]])
    np.testing.assert_allclose(min_max(x)[1, :, :, 0], [[0, 0], [1, 0.5]])
    y = np.arange(12.0).reshape(1, 2, 2, 3)            # y[0, h, w, c] = 6h + 3w + c
    np.testing.assert_array_equal(flatten_channel_major(y)[0],
                                  [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11])


def test_batch_norm_reference_by_hand():
    x = np.array([[1.0], [3.0]])
    got = batch_norm(x, [np.array([2.0]), np.array([1.0]), np.zeros(1), np.ones(1)], True, 0.0)
    np.testing.assert_allclose(got[:, 0], [-1.0, 3.0])   # mean 2, biased var 1
    assert quantization(np.array([[0.5, -2.0], [1.0, 0.0]]), 1.0) == pytest.approx(
        ((0.5 + 1.0) + (0.0 + 1.0)) / 2)
