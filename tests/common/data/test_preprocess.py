"""The original preprocessing (deprocess_image) and the NCHW-rows <-> NHWC conversion."""

from __future__ import annotations

import numpy as np
import pytest

from common.data import (ROW_WIDTH, DataFormatError, Normalization, preprocess_split, to_nhwc,
                         to_rows)

TOL = 1e-6


def deprocess_reference(x: np.ndarray) -> np.ndarray:
    """Direct transcription of the original ``deprocess_image``, in float64 on a copy."""
    x = np.array(x, dtype=np.float64, copy=True)
    x -= x.mean()
    x /= (x.std() + 1e-5)
    x *= 0.1
    x = np.clip(x, -1, 1)
    return x


def _pixels(n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Realistic pixels: 0..255, brighter towards the centre, with integer and real values."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 255.0, size=(n, ROW_WIDTH))
    x[: n // 2] = np.round(x[: n // 2])
    return x.astype(dtype)


def _heavy_tailed(n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Data that clips: Cauchy-distributed around 128 (some values far beyond 10 std)."""
    rng = np.random.default_rng(seed)
    x = 128.0 + 20.0 * rng.standard_cauchy(size=(n, ROW_WIDTH))
    return x.astype(dtype)


@pytest.mark.parametrize("make", [_pixels, _heavy_tailed])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_preprocess_split_matches_deprocess_image(make, dtype):
    x = make(64, seed=1, dtype=dtype)
    before = x.copy()
    ref = deprocess_reference(x)
    got, norm = preprocess_split(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.max(np.abs(got.astype(np.float64) - ref)) <= TOL
    np.testing.assert_array_equal(x, before)  # not in place by default
    assert norm.mean == pytest.approx(float(np.mean(x.astype(np.float64))), rel=1e-12)
    assert norm.std == pytest.approx(float(np.std(x.astype(np.float64))), rel=1e-10)


def test_clipping_is_exact_at_plus_minus_one():
    x = _heavy_tailed(64, seed=2)
    ref = deprocess_reference(x)
    got, _ = preprocess_split(x)
    assert (ref == 1.0).sum() > 10 and (ref == -1.0).sum() > 10  # the data really clips
    assert got.max() == 1.0 and got.min() == -1.0
    assert np.all(got[ref == 1.0] == 1.0)
    assert np.all(got[ref == -1.0] == -1.0)
    assert np.all(np.abs(got) <= 1.0)


def test_realistic_pixels_do_not_clip():
    x = _pixels(32, seed=3)
    got, _ = preprocess_split(x)
    # 0..255 uniform is within +-1.8 std, i.e. within +-0.18 after the 0.1 scale.
    assert np.abs(got).max() < 0.2
    assert abs(float(got.mean(dtype=np.float64))) < 1e-6
    assert float(got.std(dtype=np.float64)) == pytest.approx(0.1, rel=1e-4)


def test_each_split_uses_its_own_statistics():
    train = _pixels(64, seed=4)
    test = (_pixels(16, seed=5) * 0.5 + 60.0).astype(np.float32)  # darker, lower contrast
    train_got, train_norm = preprocess_split(train)
    test_got, test_norm = preprocess_split(test)
    assert np.max(np.abs(train_got - deprocess_reference(train))) <= TOL
    assert np.max(np.abs(test_got - deprocess_reference(test))) <= TOL
    assert train_norm != test_norm
    # Not the same as normalising the test split with the train statistics ...
    with_train_stats = train_norm.apply(test)
    assert np.max(np.abs(with_train_stats - test_got)) > 0.01
    # ... which Normalization.apply does exactly (for serving with baked-in constants).
    ref = np.clip((test.astype(np.float64) - train_norm.mean) / (train_norm.std + 1e-5) * 0.1,
                  -1, 1)
    assert np.max(np.abs(with_train_stats - ref)) <= TOL
    # And not the statistics of the two splits pooled.
    pooled = deprocess_reference(np.concatenate([train, test]))[len(train):]
    assert np.max(np.abs(pooled - test_got)) > 0.01


def test_normalization_fit_is_float64_population_statistics():
    x = _heavy_tailed(16, seed=6)
    norm = Normalization.fit(x)
    x64 = x.astype(np.float64)
    assert isinstance(norm.mean, float) and isinstance(norm.std, float)
    assert norm.mean == pytest.approx(x64.mean(), rel=1e-12)
    assert norm.std == pytest.approx(x64.std(ddof=0), rel=1e-10)


def test_normalization_fit_chunked_variance_on_more_than_one_chunk():
    # 1 << 22 values per chunk: 1400 rows x 3072 = 4.3 M values, two chunks.
    rng = np.random.default_rng(7)
    x = rng.normal(100.0, 30.0, size=(1400, ROW_WIDTH)).astype(np.float32)
    assert x.size > 1 << 22
    norm = Normalization.fit(x)
    x64 = x.astype(np.float64)
    assert norm.mean == pytest.approx(x64.mean(), rel=1e-12)
    assert norm.std == pytest.approx(x64.std(), rel=1e-10)


def test_normalization_fit_on_non_contiguous_and_nhwc_views():
    x = _pixels(16, seed=8)
    view = x[::2]
    assert Normalization.fit(view) == Normalization.fit(np.ascontiguousarray(view))
    nhwc = to_nhwc(x)
    a, b = Normalization.fit(x), Normalization.fit(nhwc)
    assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.std == pytest.approx(b.std, rel=1e-10)


def test_constant_split_is_refused_naming_its_source():
    # The original would turn it into zeros (no NaN): no image information is left.
    x = np.full((3, ROW_WIDTH), 77.0, np.float32)
    before = x.copy()
    with pytest.raises(DataFormatError) as excinfo:
        preprocess_split(x, in_place=True, source="/data/train")
    message = str(excinfo.value)
    assert excinfo.value.path == "/data/train" and message.startswith("/data/train: ")
    assert "all 9216 pixel values of the split equal 77" in message
    assert "standard deviation 0" in message
    np.testing.assert_array_equal(x, before)  # refused before anything was written


def test_constant_statistics_still_apply_without_nan():
    # Normalization itself stays total: std 0 gives zeros (e.g. serving a constant image).
    x = np.full((3, ROW_WIDTH), 77.0, np.float32)
    norm = Normalization.fit(x)
    assert norm.std == 0.0
    got = norm.apply(x)
    np.testing.assert_array_equal(got, np.zeros_like(got))
    np.testing.assert_array_equal(got, deprocess_reference(x))


def test_constant_images_inside_a_varying_split_are_normalised_as_data():
    x = _pixels(6, seed=16)
    x[1] = 0.0     # a black frame
    x[4] = 255.0   # a white one
    got, _ = preprocess_split(x)
    assert np.max(np.abs(got - deprocess_reference(x))) <= TOL
    assert len(np.unique(got[1])) == 1 and got[1, 0] < 0 < got[4, 0]


def test_in_place_returns_the_same_buffer():
    x = _heavy_tailed(32, seed=9)
    ref = deprocess_reference(x)  # computed on a copy before x is overwritten
    got, _ = preprocess_split(x, in_place=True)
    assert got is x
    assert np.max(np.abs(x - ref)) <= TOL


def test_in_place_on_float64_input_leaves_input_alone():
    x = _pixels(8, seed=10, dtype=np.float64)
    before = x.copy()
    got, _ = preprocess_split(x, in_place=True)
    assert got.dtype == np.float32 and not np.shares_memory(got, x)
    np.testing.assert_array_equal(x, before)
    assert np.max(np.abs(got - deprocess_reference(x))) <= TOL


def test_apply_with_out_buffer():
    x = _pixels(8, seed=11, dtype=np.float64)
    norm = Normalization.fit(x)
    out = np.empty(x.shape, np.float32)
    got = norm.apply(x, out=out)
    assert got is out
    assert np.max(np.abs(out - deprocess_reference(x))) <= TOL
    x32 = x.astype(np.float32)
    assert norm.apply(x32, out=x32) is x32
    np.testing.assert_array_equal(x32, out)


def test_apply_any_shape_same_values():
    x = _pixels(8, seed=12)
    norm = Normalization.fit(x)
    rows = norm.apply(x)
    images = norm.apply(to_nhwc(x))
    np.testing.assert_array_equal(to_rows(images), rows)


# ---------------------------------------------------------------------------- layout


def test_to_nhwc_equals_reshape_transpose():
    x = _pixels(5, seed=13)
    got = to_nhwc(x)
    expected = x.reshape(5, 3, 32, 32).transpose(0, 2, 3, 1)
    assert got.shape == (5, 32, 32, 3) and got.dtype == np.float32
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_to_nhwc_channel_first_row_layout():
    # Row layout: all 1024 red values, then green, then blue; each plane row-major.
    x = np.zeros((1, ROW_WIDTH), np.float32)
    c, h, w = 2, 5, 7
    x[0, c * 1024 + h * 32 + w] = 1.0
    img = to_nhwc(x)
    assert img[0, h, w, c] == 1.0 and img.sum() == 1.0
    plane = np.arange(ROW_WIDTH, dtype=np.float32)[None]
    img = to_nhwc(plane)
    assert img[0, 0, 1, 0] == 1 and img[0, 1, 0, 0] == 32 and img[0, 0, 0, 1] == 1024


def test_to_rows_inverts_to_nhwc_exactly():
    x = _heavy_tailed(6, seed=14)
    rows = to_rows(to_nhwc(x))
    assert rows.shape == x.shape and rows.flags.c_contiguous
    np.testing.assert_array_equal(rows, x)
    images = to_nhwc(x)
    np.testing.assert_array_equal(to_nhwc(to_rows(images)), images)


def test_to_nhwc_casts_to_float32_and_handles_empty():
    x = _pixels(2, seed=15, dtype=np.float64)
    np.testing.assert_array_equal(to_nhwc(x), x.astype(np.float32).reshape(2, 3, 32, 32)
                                  .transpose(0, 2, 3, 1))
    assert to_nhwc(np.zeros((0, ROW_WIDTH))).shape == (0, 32, 32, 3)
    assert to_rows(np.zeros((0, 32, 32, 3))).shape == (0, ROW_WIDTH)


@pytest.mark.parametrize("shape", [(4, 3000), (ROW_WIDTH,), (4, 3, 32, 32), (4, 32, 32, 3),
                                   (4, ROW_WIDTH, 1)])
def test_to_nhwc_bad_shapes(shape):
    with pytest.raises(ValueError, match="3072"):
        to_nhwc(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape", [(4, ROW_WIDTH), (4, 3, 32, 32), (4, 32, 32, 1),
                                   (4, 28, 28, 3), (32, 32, 3)])
def test_to_rows_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"\(n, 32, 32, 3\)"):
        to_rows(np.zeros(shape, np.float32))
