"""GalleryIndex: exact search against a brute-force reference, ties by gallery id,
add/remove/save/load round trips, and a kill during save never losing the old index."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from checkout import ROOT
from common.metrics.hamming import hamming_distances
from face_search.errors import IndexBusyError, IndexFolderError, UnknownIdError
from face_search.index import GalleryIndex, ItemMeta
from face_search.index.mih import MultiIndexHash, substrings

ENV = dict(os.environ, PYTHONPATH=ROOT)


# ------------------------------------------------------------------ references
def reference_distances(queries: np.ndarray, codes: np.ndarray, bits: int) -> np.ndarray:
    """Bit-by-bit Hamming distances of packed codes (unpack, compare, count)."""
    q = np.unpackbits(queries, axis=1, bitorder="little")[:, :bits]
    d = np.unpackbits(codes, axis=1, bitorder="little")[:, :bits]
    return (q[:, None, :] != d[None, :, :]).sum(axis=2)


def reference_knn(queries, codes, ids, bits, k):
    """[(ids, distances)] of the k nearest, lexsorted by (distance, id)."""
    dist = reference_distances(queries, codes, bits)
    out = []
    for row in dist:
        order = np.lexsort((ids, row))[:k]
        out.append((ids[order], row[order]))
    return out


def clustered_codes(rng, n: int, bits: int, centres: int = 12, flip: float = 0.05):
    """Packed codes around a few centres: many equal distances, like trained codes."""
    centre_bits = rng.random((centres, bits)) < 0.5
    which = rng.integers(0, centres, n)
    bits_ = centre_bits[which] ^ (rng.random((n, bits)) < flip)
    return np.packbits(bits_, axis=1, bitorder="little"), which


def meta(n: int, offset: int = 0) -> list[ItemMeta]:
    return [ItemMeta(f"person {(i + offset) % 7}", (i + offset) % 7, f"g/{i + offset}.jpg#0")
            for i in range(n)]


def assert_hits_equal(hits, expected):
    for got, (ids, dist) in zip(hits, expected, strict=True):
        assert [h.gallery_id for h in got] == ids.tolist()
        assert [h.distance for h in got] == dist.tolist()


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("kind", ["exact", "mih"])
@pytest.mark.parametrize("bits", [12, 13, 24, 36, 48])
def test_search_equals_the_brute_force_reference(bits, kind):
    rng = np.random.default_rng(bits)
    codes, _ = clustered_codes(rng, 1500, bits)
    queries, _ = clustered_codes(rng, 40, bits, flip=0.15)
    queries[:5] = codes[rng.integers(0, len(codes), 5)]  # exact duplicates: distance 0 ties
    index = GalleryIndex.create(bits, kind)
    ids = index.add(codes, meta(len(codes)))
    for k in (1, 10, 100):
        hits = index.search(queries, k)
        assert_hits_equal(hits, reference_knn(queries, codes, ids, bits, k))
    # the distances are the project evaluator's
    dense = hamming_distances(np.unpackbits(queries, axis=1, bitorder="little")[:, :bits],
                              np.unpackbits(codes, axis=1, bitorder="little")[:, :bits],
                              code_format="binary")
    for q, row in enumerate(index.search(queries, 10)):
        assert [h.distance for h in row] == dense[q, [h.gallery_id for h in row]].tolist()


@pytest.mark.parametrize("kind,max_window", [("exact", None), ("exact", 60), ("mih", None)])
def test_ties_beyond_any_candidate_window_are_ordered_by_gallery_id(kind, max_window,
                                                                   monkeypatch):
    if max_window:  # ties past the widest faiss window: the numpy scan answers
        monkeypatch.setattr("face_search.index.exact.MAX_WINDOW", max_window)
    index = GalleryIndex.create(24, kind)
    same = np.tile(np.array([[0x5A, 0x0F, 0xF0]], np.uint8), (700, 1))
    index.add(same, meta(700))
    index.remove(range(0, 700, 3))
    kept = [i for i in range(700) if i % 3]
    hits = index.search(same[:2], 50)
    for row in hits:
        assert [h.gallery_id for h in row] == kept[:50]
        assert {h.distance for h in row} == {0}


@pytest.mark.parametrize("bits", [13, 48])
def test_within_radius_equals_the_reference(bits):
    rng = np.random.default_rng(3)
    codes, _ = clustered_codes(rng, 800, bits)
    queries, _ = clustered_codes(rng, 10, bits)
    index = GalleryIndex.create(bits)
    ids = index.add(codes, meta(len(codes)))
    dist = reference_distances(queries, codes, bits)
    for radius in (0, 2, 5):
        for row, got in zip(dist, index.within_radius(queries, radius)):
            inside = np.flatnonzero(row <= radius)
            order = inside[np.lexsort((ids[inside], row[inside]))]
            assert [h.gallery_id for h in got] == ids[order].tolist()
            assert [h.distance for h in got] == row[order].tolist()


def test_multi_index_hashing_hands_far_queries_to_the_flat_scan_and_stays_exact(monkeypatch):
    rng = np.random.default_rng(5)
    bits = 48
    codes = np.packbits(rng.random((3000, bits)) < 0.5, axis=1, bitorder="little")
    far = np.bitwise_not(codes[:4])  # complements: their own item 48 bits away
    words = np.zeros((len(codes), 8), np.uint8)
    words[:, :6] = codes
    qwords = np.zeros((4, 8), np.uint8)
    qwords[:, :6] = far
    tables = MultiIndexHash(bits, words.view(np.uint64))
    dist, pos, complete = tables.knn(qwords.view(np.uint64), 10)
    assert complete.all()  # answered by hashing alone: exact
    for d, p, (ref_ids, ref_dist) in zip(dist, pos, reference_knn(far, codes, np.arange(3000),
                                                                 bits, 10)):
        assert p.tolist() == ref_ids.tolist() and d.tolist() == ref_dist.tolist()
    monkeypatch.setattr(MultiIndexHash, "candidate_fraction", 0.01)
    assert not tables.knn(qwords.view(np.uint64), 10)[2].any()  # too many candidates: given up
    index = GalleryIndex.create(bits, "mih")
    ids = index.add(codes, meta(len(codes)))
    assert_hits_equal(index.search(far, 10), reference_knn(far, codes, ids, bits, 10))


def test_substrings_cover_every_bit_once():
    for bits in (1, 12, 13, 16, 17, 48, 70, 130):
        ranges = substrings(bits)
        assert ranges[0][0] == 0 and ranges[-1][1] == bits
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(0 < hi - lo <= 16 for lo, hi in ranges)


def test_packed_codes_are_checked_never_cast():
    index = GalleryIndex.create(13)
    with pytest.raises(ValueError, match="not packed uint8"):
        index.add(np.zeros((2, 2), np.int64), meta(2))
    with pytest.raises(ValueError, match=r"expected \(N, 2\)"):
        index.add(np.zeros((2, 3), np.uint8), meta(2))
    with pytest.raises(ValueError, match="padding bits"):
        index.add(np.array([[0, 0], [0, 0x20]], np.uint8), meta(2))
    with pytest.raises(ValueError, match="2 codes but 1 metadata"):
        index.add(np.zeros((2, 2), np.uint8), meta(1))
    assert index.search(np.zeros((1, 2), np.uint8), 5) == [[]]  # empty gallery


# ------------------------------------------------------------------ add / remove
def test_add_and_remove_keep_ids_stable_and_results_exact():
    rng = np.random.default_rng(9)
    bits = 36
    first, _ = clustered_codes(rng, 500, bits)
    second, _ = clustered_codes(rng, 300, bits)
    index = GalleryIndex.create(bits, "mih")
    ids_a = index.add(first, meta(500))
    index.search(first[:1], 3)  # builds the hashing tables, which add must invalidate
    ids_b = index.add(second, meta(300, offset=500))
    assert ids_a.tolist() == list(range(500)) and ids_b.tolist() == list(range(500, 800))
    with pytest.raises(UnknownIdError, match="800"):
        index.remove([3, 800])
    assert len(index) == 800  # nothing removed
    gone = rng.choice(800, 250, replace=False)
    assert index.remove(gone) == 250
    all_codes = np.concatenate([first, second])
    keep = np.setdiff1d(np.arange(800), gone)
    queries = all_codes[rng.integers(0, 800, 20)]
    assert_hits_equal(index.search(queries, 15),
                      reference_knn(queries, all_codes[keep], keep, bits, 15))
    assert index.add(first[:2], meta(2)).tolist() == [800, 801]  # ids are never reused
    assert index.item(801) == meta(2)[1]
    with pytest.raises(UnknownIdError):
        index.item(int(gone[0]))


BAD_NAME = "Jos\udce9"  # how Python names a file whose name holds the Latin-1 byte 0xE9


@pytest.mark.parametrize("identities, labels, sources, error", [
    (["a", BAD_NAME], [0, 1], ["a.jpg", "b.jpg"],
     r"an identity is not valid UTF-8 text: Jos\\xe9$"),
    (["a", "b"], [0, 1], ["a.jpg", f"{BAD_NAME}/b.jpg"],
     r"a source is not valid UTF-8 text: Jos\\xe9/b\.jpg$"),
    (["a", "b"], [[0], [1]], ["a.jpg", "b.jpg"], r"one number per item, got shape \(2, 1\)"),
])
def test_a_refused_add_leaves_the_index_unchanged_and_savable(tmp_path, identities, labels,
                                                              sources, error):
    """Every check comes before the first change: a half-added item would save as an index
    whose ids and columns disagree, refused as damaged on every later load."""
    index = GalleryIndex.create(12)
    index.add(np.full((3, 2), 1, np.uint8), meta(3))
    with pytest.raises(ValueError, match=error):
        index.add_columns(np.full((2, 2), 2, np.uint8), identities, labels, sources)
    assert len(index) == 3 and index.next_id == 3 and index.ids.tolist() == [0, 1, 2]
    index.save(str(tmp_path / "idx"))
    loaded = GalleryIndex.load(str(tmp_path / "idx"))
    assert [loaded.item(i) for i in range(3)] == meta(3)
    assert loaded.add(np.full((1, 2), 2, np.uint8), meta(1)).tolist() == [3]


def test_identities_can_be_listed_and_removed_by_name():
    index = GalleryIndex.create(12)
    index.add(np.zeros((14, 2), np.uint8), meta(14))
    assert index.identity_counts()["person 3"] == 2
    ids = index.ids_of_identities(["person 3", "nobody"])
    assert ids.tolist() == [3, 10]
    index.remove(ids)
    assert "person 3" not in index.identity_counts() and len(index) == 12


# ------------------------------------------------------------------ persistence
@pytest.mark.parametrize("kind", ["exact", "mih"])
def test_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(11)
    codes, _ = clustered_codes(rng, 400, 48)
    index = GalleryIndex.create(48, kind)
    people = ["Zoë Ångström", "李雷", "a,b#c"]
    names = [ItemMeta(people[i % 3], i % 3, f"dir with space/{i}.png") for i in range(400)]
    index.add(codes, names)
    index.remove([0, 7, 399])
    index.model = {"path": "/x", "num_bits": 48, "fingerprint": "ab"}
    index.save(str(tmp_path / "idx"))
    loaded = GalleryIndex.load(str(tmp_path / "idx"))
    assert (loaded.kind, loaded.num_bits, loaded.next_id, loaded.model) == (
        kind, 48, 400, index.model)
    np.testing.assert_array_equal(loaded.codes, index.codes)
    np.testing.assert_array_equal(loaded.ids, index.ids)
    assert [loaded.item(i) for i in loaded.ids] == [index.item(i) for i in index.ids]
    assert loaded.search(codes[:9], 12) == index.search(codes[:9], 12)
    # save again over it (replaces an index), after a change
    loaded.remove([1])
    loaded.save(str(tmp_path / "idx"))
    assert len(GalleryIndex.load(str(tmp_path / "idx"))) == 396
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no temporaries, no lock left behind


def test_save_refuses_folders_that_are_not_indexes(tmp_path, monkeypatch):
    index = GalleryIndex.create(12)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run_config.json").write_text("{}")
    with pytest.raises(IndexFolderError, match="not an index folder: holds run_config.json"):
        index.save(str(tmp_path / "run"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFolderError, match="is a file"):
        index.save(str(tmp_path / "file"))
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(IndexFolderError, match="current directory"):
        index.save(str(tmp_path))
    assert (tmp_path / "run" / "run_config.json").read_text() == "{}"


def test_a_damaged_or_foreign_index_is_refused_with_the_file_named(tmp_path):
    index = GalleryIndex.create(12)
    index.add(np.zeros((5, 2), np.uint8), meta(5))
    path = index.save(str(tmp_path / "idx"))
    with open(os.path.join(path, "codes.npy"), "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    with pytest.raises(IndexFolderError, match=r"codes\.npy: damaged"):
        GalleryIndex.load(path)
    with pytest.raises(IndexFolderError, match="not an index"):
        GalleryIndex.load(str(tmp_path))
    with pytest.raises(IndexFolderError, match="no such index folder"):
        GalleryIndex.load(str(tmp_path / "missing"))


def test_a_truncated_manifest_is_called_damaged_and_never_replaced_unasked(tmp_path):
    """A manifest cut short (a copy interrupted) is named as damaged, not "not an index";
    a save over it is refused, since nothing proves the folder is ours."""
    path = GalleryIndex.create(12).save(str(tmp_path / "idx"))
    manifest = os.path.join(path, "index.json")
    with open(manifest, "rb") as f:
        raw = f.read()
    with open(manifest, "wb") as f:
        f.write(raw[:len(raw) // 2])
    with pytest.raises(IndexFolderError, match=r"index\.json: damaged \(not JSON\); rebuild"):
        GalleryIndex.load(path)
    with pytest.raises(IndexFolderError, match=r"its index\.json is damaged or of another "
                                               r"format \(delete the folder yourself"):
        GalleryIndex.create(12).save(path)
    with open(manifest, "wb") as f:
        f.write(b'{"format": "someone else\'s"}')  # valid JSON of another tool
    with pytest.raises(IndexFolderError, match="not an index \\(no index.json with"):
        GalleryIndex.load(path)


def test_a_second_writer_is_refused(tmp_path):
    index = GalleryIndex.create(12)
    lock = os.open(tmp_path / ".idx.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as another process saving the same index would
    try:
        with pytest.raises(IndexBusyError, match="another writer"):
            index.save(str(tmp_path / "idx"))
    finally:
        os.close(lock)
    index.save(str(tmp_path / "idx"))


def test_a_second_writer_thread_of_the_same_process_is_refused(tmp_path):
    """The lock is re-entrant for the thread holding it only: another thread saving while
    one changes the index would overwrite that change (and reuse its gallery ids)."""
    from face_search.index import store

    path = str(tmp_path / "idx")
    GalleryIndex.create(12).save(path)
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer():
        with store.locked(path):
            with store.locked(path):  # re-entrant in its own thread
                holding.set()
                release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(30)
        other = GalleryIndex.create(12)
        other.add(np.full((2, 2), 3, np.uint8), [("b", 1, "b.jpg")] * 2)
        try:
            other.save(path)
        except IndexBusyError as exc:
            errors.append(exc)
    finally:
        release.set()
        thread.join(30)
    assert len(errors) == 1 and "another writer" in str(errors[0])
    assert len(GalleryIndex.load(path)) == 0  # the refused save changed nothing
    other.save(path)  # and once the lock is free, it goes through
    assert len(GalleryIndex.load(path)) == 2


_SAVE_SCRIPT = """
import sys, numpy as np
from face_search.index import GalleryIndex
from common.io import folder_swap
if sys.argv[2] == "no-exchange":
    folder_swap._exchange = lambda a, b: False  # a filesystem without renameat2's exchange
index = GalleryIndex.load(sys.argv[1])
index.add(np.full((3, 2), 7, np.uint8), [("new", 9, "n.jpg")] * 3)
index.save(sys.argv[1])
"""


@pytest.mark.parametrize("point,mode,expect_new", [
    ("index:written", "exchange", False), ("index:swapped", "exchange", True),
    ("index:aside", "no-exchange", False), ("index:swapped", "no-exchange", True)])
def test_a_kill_during_save_leaves_a_loadable_index(tmp_path, point, mode, expect_new):
    index = GalleryIndex.create(12)
    index.add(np.zeros((4, 2), np.uint8), meta(4))
    path = index.save(str(tmp_path / "idx"))
    proc = subprocess.run([sys.executable, "-c", _SAVE_SCRIPT, path, mode],
                          env=dict(ENV, FACE_HASHING_CRASH_AT=point), capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()  # killed at the crash point
    loaded = GalleryIndex.load(path)  # puts back an index left aside
    assert len(loaded) == (7 if expect_new else 4)
    loaded.save(path)  # the next save cleans the killed one's leftovers
    assert sorted(os.listdir(tmp_path)) == ["idx"]
    with open(os.path.join(path, "index.json")) as f:
        assert json.load(f)["count"] == len(loaded)


def test_multi_index_hashing_gives_the_same_answers_serial_and_parallel(monkeypatch):
    monkeypatch.setattr(MultiIndexHash, "candidate_fraction", 100.0)  # never give up here
    rng = np.random.default_rng(13)
    codes, _ = clustered_codes(rng, 2000, 70)  # two 64-bit words, a substring across them
    queries, _ = clustered_codes(rng, 80, 70, flip=0.2)
    wide = np.zeros((len(codes), 16), np.uint8)
    wide[:, :9] = codes
    qwide = np.zeros((len(queries), 16), np.uint8)
    qwide[:, :9] = queries
    tables = MultiIndexHash(70, wide.view(np.uint64))
    serial = tables.knn(qwide.view(np.uint64), 10, parallel=False)
    parallel = tables.knn(qwide.view(np.uint64), 10, parallel=True)
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)
    assert serial[2].all()
    for d, p, (ref_ids, ref_dist) in zip(*serial[:2], reference_knn(queries, codes,
                                                                    np.arange(2000), 70, 10)):
        assert p.tolist() == ref_ids.tolist() and d.tolist() == ref_dist.tolist()
