"""retrieval_metrics against an independent brute-force implementation."""

import numpy as np
import pytest

from common.metrics import METRIC_KEYS, hamming_distances, legacy_bits, retrieval_metrics
from common.metrics import retrieval as retrieval_module

import retrieval_reference as ref

BIT_COUNTS = [12, 24, 36, 48, 13]
ENGINES = ["numba", "numpy"]


def as_array(result):
    assert set(result) == set(METRIC_KEYS)
    assert all(isinstance(v, float) for v in result.values())
    return np.array([result[k] for k in METRIC_KEYS])


def tied_problem(rng, bits, num_queries=12, num_db=150, num_labels=5):
    """Random codes with many exact ties and a query label absent from the database."""
    db = rng.normal(size=(num_db, bits))
    db[10:40] = np.sign(db[0])              # a block of identical codes
    db[50:60, : bits // 2] = 0.0            # zeros count as +1
    queries = rng.normal(size=(num_queries, bits))
    queries[:4] = db[:4] + 0.01 * rng.normal(size=(4, bits))
    db_labels = rng.integers(0, num_labels, num_db)
    # label num_labels: a query with no relevant item
    query_labels = rng.integers(0, num_labels + 1, num_queries)
    return queries, query_labels, db, db_labels


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bits", BIT_COUNTS + [70])
@pytest.mark.parametrize("hamming", ["exact", "legacy"])
def test_index_ties_match_brute_force(bits, hamming, engine):
    rng = np.random.default_rng(bits)
    q, ql, d, dl = tied_problem(rng, bits)
    got = retrieval_metrics(q, ql, d, dl, top_k=20, radius=2, hamming=hamming, ties="index",
                            engine=engine)
    want = ref.metrics(q, ql, d, dl, top_k=20, radius=2, legacy=hamming == "legacy")
    np.testing.assert_allclose(as_array(got), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("bits", BIT_COUNTS)
@pytest.mark.parametrize("hamming", ["exact", "legacy"])
def test_expected_ties_match_average_over_all_orders(bits, hamming, engine):
    rng = np.random.default_rng(100 + bits)
    q = rng.normal(size=(4, bits))
    d = rng.normal(size=(6, bits))
    d[3] = d[1]
    d[4] = d[1]
    q[0] = d[1]
    q[1] = -d[5]
    ql = np.array([0, 1, 2, 3])
    dl = np.array([0, 1, 0, 0, 2, 1])
    got = retrieval_metrics(q, ql, d, dl, top_k=3, radius=bits // 3, hamming=hamming,
                            ties="expected", engine=engine)
    want = ref.expected_metrics(q, ql, d, dl, top_k=3, radius=bits // 3, legacy=hamming == "legacy")
    np.testing.assert_allclose(as_array(got), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
def test_expected_ties_differ_from_index_ties_when_ties_matter(engine):
    rng = np.random.default_rng(5)
    d = np.sign(rng.normal(size=(6, 12)))
    d[:] = d[0]                                 # all database items tied
    dl = np.array([1, 1, 0, 0, 0, 0])
    q, ql = d[:1].copy(), np.array([0])
    index = retrieval_metrics(q, ql, d, dl, top_k=2, ties="index", engine=engine)
    expected = retrieval_metrics(q, ql, d, dl, top_k=2, ties="expected", engine=engine)
    # Index order puts the two irrelevant items first: AP = (1/3 + 2/4 + 3/5 + 4/6) / 4.
    assert index["map"] == pytest.approx((1 / 3 + 2 / 4 + 3 / 5 + 4 / 6) / 4, abs=1e-15)
    assert index["precision_at_k"] == 0.0
    assert expected["precision_at_k"] == pytest.approx(4 / 6, abs=1e-15)
    assert expected["map"] > index["map"]


@pytest.mark.parametrize("ties", ["index", "expected"])
def test_numpy_strategies_chunking_and_threads_agree(monkeypatch, ties):
    rng = np.random.default_rng(7)
    q, ql, d, dl = tied_problem(rng, 24, num_queries=30, num_db=300, num_labels=3)
    want = ref.metrics(q, ql, d, dl, top_k=25, radius=3) if ties == "index" else None
    results = []
    for bins_per_item, chunk in [(0, 1 << 22), (10 ** 9, 1 << 22), (10 ** 9, 700)]:
        monkeypatch.setattr(retrieval_module, "_SEGMENT_BINS_PER_ITEM", bins_per_item)
        monkeypatch.setattr(retrieval_module, "_CHUNK_ELEMENTS", chunk)
        for workers in (1, 3):
            results.append(as_array(retrieval_metrics(q, ql, d, dl, top_k=25, radius=3,
                                                      ties=ties, workers=workers, engine="numpy")))
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=0, atol=1e-14)
    if want is not None:
        np.testing.assert_allclose(results[0], want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("ties", ["index", "expected"])
@pytest.mark.parametrize("hamming", ["exact", "legacy"])
def test_engines_agree_on_a_larger_problem(ties, hamming):
    rng = np.random.default_rng(11)
    centers = rng.normal(size=(40, 24))
    dl = rng.integers(0, 40, 3000)
    ql = rng.integers(0, 41, 400)                     # label 40: no relevant item
    d = centers[dl] + rng.normal(size=(3000, 24))
    q = centers[ql % 40] + rng.normal(size=(400, 24))
    d[::7] = np.sign(d[::7])
    got = {e: as_array(retrieval_metrics(q, ql, d, dl, hamming=hamming, ties=ties, engine=e,
                                         workers=w))
           for e, w in [("numba", 1), ("numba", 2), ("numpy", 2)]}
    np.testing.assert_allclose(got["numba"], got["numpy"], rtol=0, atol=1e-12)


def test_labels_of_any_comparable_type():
    rng = np.random.default_rng(12)
    q, d = rng.normal(size=(6, 16)), rng.normal(size=(30, 16))
    ql, dl = rng.integers(0, 3, 6), rng.integers(0, 3, 30)
    names = np.array(["ann", "bob", "cy"])
    np.testing.assert_array_equal(as_array(retrieval_metrics(q, names[ql], d, names[dl])),
                                  as_array(retrieval_metrics(q, ql, d, dl)))


def test_perfect_codes_give_perfect_scores():
    rng = np.random.default_rng(0)
    centers = np.sign(rng.normal(size=(4, 48)))
    dl = np.repeat(np.arange(4), 10)
    ql = np.arange(4)
    r = retrieval_metrics(centers, ql, centers[dl], dl, top_k=10, radius=2)
    assert r == {"map": 1.0, "precision_at_k": 1.0, "precision_within_radius": 1.0,
                 "recall_within_radius": 1.0}


def test_top_k_larger_than_database_uses_database_size():
    rng = np.random.default_rng(1)
    q, d = rng.normal(size=(3, 12)), rng.normal(size=(5, 12))
    ql, dl = np.array([0, 1, 0]), np.array([0, 0, 1, 1, 0])
    got = retrieval_metrics(q, ql, d, dl, top_k=50)
    want = ref.metrics(q, ql, d, dl, top_k=50)
    np.testing.assert_allclose(as_array(got), want, atol=1e-12)
    # every query sees the whole database: precision@5 = share of relevant items
    assert got["precision_at_k"] == pytest.approx(np.mean([3 / 5, 2 / 5, 3 / 5]))


def test_legacy_distance_drops_bit_7_of_every_byte():
    rng = np.random.default_rng(3)
    codes = np.sign(rng.normal(size=(20, 48)))
    flipped = codes.copy()
    flipped[:, 7::8] *= -1                      # bit 7 of each byte
    assert np.array_equal(hamming_distances(codes, flipped, "legacy").diagonal(), np.zeros(20))
    assert np.array_equal(hamming_distances(codes, flipped, "exact").diagonal(), np.full(20, 6))
    opposite = -codes
    assert np.all(hamming_distances(codes, opposite, "legacy").diagonal() == 42)
    np.testing.assert_array_equal(hamming_distances(codes, codes[::-1], "legacy"),
                                  ref.distances(codes, codes[::-1], legacy=True))


def test_legacy_bits_of_a_partial_byte():
    # 4 bits: value = sum 2^i * s_i in [-15, 15], stored modulo 256.
    bits = np.array([[True, True, True, True], [False, False, False, False],
                     [True, False, False, False]])
    packed = np.packbits(legacy_bits(bits), axis=1)[:, 0]
    assert packed.tolist() == [15, (-15) % 256, (1 - 2 - 4 - 8) % 256]


def test_exact_distances_for_long_codes():
    rng = np.random.default_rng(4)
    q, d = rng.normal(size=(5, 130)), rng.normal(size=(9, 130))
    np.testing.assert_array_equal(hamming_distances(q, d), ref.distances(q, d))


@pytest.mark.parametrize("kwargs, message", [
    (dict(hamming="fast"), "hamming"),
    (dict(ties="random"), "ties"),
    (dict(top_k=0), "top_k"),
    (dict(radius=-1), "radius"),
    (dict(engine="cuda"), "engine"),
])
def test_bad_options_raise(kwargs, message):
    q, d = np.ones((2, 8)), np.ones((3, 8))
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(q, [0, 1], d, [0, 1, 1], **kwargs)


def test_bad_inputs_raise():
    q, d = np.ones((2, 8)), np.ones((3, 8))
    with pytest.raises(ValueError, match="bits"):
        retrieval_metrics(q, [0, 1], np.ones((3, 9)), [0, 1, 1])
    with pytest.raises(ValueError, match="query_labels"):
        retrieval_metrics(q, [0, 1, 2], d, [0, 1, 1])
    with pytest.raises(ValueError, match="db_labels"):
        retrieval_metrics(q, [0, 1], d, [0, 1])
    with pytest.raises(ValueError, match="non-finite"):
        retrieval_metrics(np.full((2, 8), np.nan), [0, 1], d, [0, 1, 1])
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.ones(8), [0], d, [0, 1, 1])
    with pytest.raises(ValueError, match="booleans"):
        retrieval_metrics(q > 0, [0, 1], d, [0, 1, 1])


# ------------------------------------------------------------------ input refusals


def _zero_one_problem(seed=20, bits=24, num_queries=10, num_db=80):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 2, (num_queries, bits))
    d = rng.integers(0, 2, (num_db, bits))
    d[5:15] = q[0]                                    # ties
    return q, rng.integers(0, 4, num_queries), d, rng.integers(0, 4, num_db)


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_zero_one_codes_are_refused_unless_declared_binary(dtype):
    q, ql, d, dl = _zero_one_problem()
    with pytest.raises(ValueError, match=r'query_codes hold only the values 0 and 1.*'
                                         r'code_format="binary"'):
        retrieval_metrics(q.astype(dtype), ql, d.astype(dtype), dl)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("ties", ["index", "expected"])
@pytest.mark.parametrize("hamming", ["exact", "legacy"])
@pytest.mark.parametrize("convert", [lambda c: c, lambda c: c.astype(bool),
                                     lambda c: c.astype(np.uint8), lambda c: c.astype(np.float64)])
def test_binary_codes_give_the_figures_of_the_equivalent_signed_codes(engine, ties, hamming,
                                                                       convert):
    q, ql, d, dl = _zero_one_problem()
    kwargs = dict(top_k=7, radius=3, hamming=hamming, ties=ties, engine=engine)
    binary = retrieval_metrics(convert(q), ql, convert(d), dl, code_format="binary", **kwargs)
    signed = retrieval_metrics(2 * q - 1, ql, 2 * d - 1, dl, **kwargs)
    assert binary == signed
    if ties == "index":
        want = ref.metrics(2 * q - 1, ql, 2 * d - 1, dl, top_k=7, radius=3,
                           legacy=hamming == "legacy")
        np.testing.assert_allclose(as_array(binary), want, rtol=0, atol=1e-12)


def test_binary_hamming_distances_equal_signed_ones():
    q, _, d, _ = _zero_one_problem()
    for hamming in ("exact", "legacy"):
        np.testing.assert_array_equal(
            hamming_distances(q, d, hamming, code_format="binary"),
            hamming_distances(2 * q - 1, 2 * d - 1, hamming))


@pytest.mark.parametrize("dtype, message", [(bool, "booleans"), (np.uint8, "unsigned"),
                                            (np.uint64, "unsigned")])
def test_bool_and_unsigned_codes_are_refused_as_signed_codes(dtype, message):
    q, ql, d, dl = _zero_one_problem()
    with pytest.raises(ValueError, match=rf'query_codes: {message}.*code_format="binary"'):
        retrieval_metrics(q.astype(dtype), ql, d, dl)


def test_zero_one_codes_split_across_queries_and_database_are_refused():
    # All-zero queries (every bit +1 when signed) against all-one database codes: signed
    # and binary readings disagree, so neither is assumed.
    q, d = np.zeros((3, 8)), np.ones((5, 8))
    with pytest.raises(ValueError, match="query_codes and db_codes together hold only the values"):
        retrieval_metrics(q, [0, 1, 2], d, [0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match="together"):
        hamming_distances(q, d)


def test_zero_codes_remain_signed_codes():
    # A model that outputs 0 gives all +1 bits, as in the original (the chance baseline).
    rng = np.random.default_rng(21)
    d, dl = rng.normal(size=(40, 12)), rng.integers(0, 3, 40)
    ql = np.array([0, 1, 2])
    zeros = retrieval_metrics(np.zeros((3, 12)), ql, d, dl)
    assert zeros == retrieval_metrics(np.ones((3, 12)), ql, d, dl)
    assert retrieval_metrics(np.zeros((3, 12)), ql, np.zeros((40, 12)), dl)["map"] > 0
    # +-1 and real codes with exact zeros are signed codes too.
    mixed = np.sign(rng.normal(size=(3, 12)))
    mixed[:, :3] = 0.0
    retrieval_metrics(mixed, ql, d, dl)


@pytest.mark.parametrize("values", [[-1, 1], [0, 2], [0.5, 1.0]])
def test_binary_format_refuses_values_other_than_zero_and_one(values):
    q = np.array([values * 4])
    with pytest.raises(ValueError, match=r'query_codes: code_format="binary" takes 0/1 codes, '
                                         r'found .*code_format="signed"'):
        retrieval_metrics(q, [0], np.zeros((2, 8)), [0, 1], code_format="binary")


@pytest.mark.parametrize("code_format", ["signed", "binary"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["query_codes", "db_codes"])
def test_non_finite_codes_are_refused(code_format, bad, side):
    q, d = np.ones((2, 8)), np.zeros((3, 8))
    (q if side == "query_codes" else d)[1, 4] = bad
    with pytest.raises(ValueError, match=f"{side} hold non-finite values"):
        retrieval_metrics(q, [0, 1], d, [0, 1, 1], code_format=code_format)


def test_unknown_code_format_is_refused():
    with pytest.raises(ValueError, match="code_format must be one of"):
        retrieval_metrics(np.ones((2, 8)), [0, 1], np.ones((3, 8)), [0, 1, 1], code_format="01")


@pytest.mark.parametrize("name", ["top_k", "radius"])
@pytest.mark.parametrize("value", [2.5, 3.0, True, "3", None, np.float64(3)])
def test_top_k_and_radius_must_be_integers(name, value):
    q, d = np.ones((2, 8)), -np.ones((3, 8))
    with pytest.raises(TypeError, match=f"{name} must be an integer, got"):
        retrieval_metrics(q, [0, 1], d, [0, 1, 1], **{name: value})


def test_numpy_integers_are_integers_and_huge_radius_is_the_whole_code():
    rng = np.random.default_rng(22)
    q, d = rng.normal(size=(4, 16)), rng.normal(size=(30, 16))
    ql, dl = rng.integers(0, 3, 4), rng.integers(0, 3, 30)
    for engine in ENGINES:
        plain = retrieval_metrics(q, ql, d, dl, top_k=5, radius=16, engine=engine)
        assert retrieval_metrics(q, ql, d, dl, top_k=np.int64(5), radius=np.uint8(16),
                                 engine=engine) == plain
        assert retrieval_metrics(q, ql, d, dl, top_k=5, radius=10 ** 30, engine=engine) == plain


@pytest.mark.parametrize("labels, shown", [([0.0, np.nan, 1.0], "nan"), ([0.0, 1.5, 1.0], "1.5"),
                                           ([0.0, np.inf, 1.0], "inf")])
def test_nan_or_fractional_labels_are_refused(labels, shown):
    q, d = np.ones((3, 8)), -np.ones((3, 8))
    with pytest.raises(ValueError, match=f"query_labels must be whole numbers, found {shown} at "
                                         "index 1"):
        retrieval_metrics(q, np.array(labels), d, [0, 1, 1])
    with pytest.raises(ValueError, match="db_labels must be whole numbers"):
        retrieval_metrics(q, [0, 1, 1], d, np.array(labels))
    with pytest.raises(ValueError, match="db_labels hold NaN at index 1"):
        retrieval_metrics(q, [0, 1, 1], d, np.array(["a", float("nan"), "b"], dtype=object))


def test_whole_number_float_labels_equal_integer_labels():
    rng = np.random.default_rng(23)
    q, d = rng.normal(size=(5, 12)), rng.normal(size=(25, 12))
    ql, dl = rng.integers(0, 3, 5), rng.integers(0, 3, 25)
    assert (retrieval_metrics(q, ql.astype(float), d, dl.astype(np.float32))
            == retrieval_metrics(q, ql, d, dl))
