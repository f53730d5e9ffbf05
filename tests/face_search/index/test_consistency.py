"""A gallery index read while it is saved, and a damaged manifest.

Concurrent readers (issue 27, class 6): ``add`` saves by swapping a complete new folder
into place; a load meanwhile used to open ``index.json`` of one folder and data files of
the other, or find an old file already deleted, and failed with a false "damaged ...
rebuild the index" (78 of 40,495 loads during 150 saves). Here a writer process saves
over and over while reader threads load in a loop: every load must succeed and be one
save's index (its codes, ids and next id agree), on a filesystem that exchanges folders
and on one that cannot (the old folder renamed aside for an instant).

The manifest (class 5): ``index.json`` was not checksummed, so a one-byte change loaded
with changed metadata. Every single-bit flip at every position is now refused or loads
the same index; a manifest saved before the checksum existed still loads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from checkout import ROOT
from common.io import folder_swap
from face_search.index import manifest as index_manifest
from face_search.index import store
from face_search.errors import IndexFolderError
from face_search.index import GalleryIndex

OLD_INDEX = os.path.join(ROOT, "tests", "data", "old_format", "index")
BITS = 12

_WRITER = """
import sys, numpy as np
import common.io.folder_swap as folder_swap
from face_search.index import GalleryIndex
path, saves, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "no-exchange":
    folder_swap._exchange = lambda a, b: False  # a filesystem without renameat2's exchange
for _ in range(saves):
    index = GalleryIndex.load(path)
    n = len(index)
    index.add(np.array([[(n // 3) % 256, 0]] * 3, np.uint8), [("p", 1, f"s{n}")] * 3)
    index.save(path)
"""


def _first_index(path: str) -> None:
    index = GalleryIndex.create(BITS)
    index.add(np.zeros((3, 2), np.uint8), [("p", 1, "s0")] * 3)
    index.save(path)


def _one_save(index: GalleryIndex) -> bool:
    """Whether ``index`` is exactly what one of the writer's saves wrote."""
    ids = index.ids
    return (len(ids) % 3 == 0 and index.next_id == len(ids)
            and np.array_equal(ids, np.arange(len(ids)))
            and np.array_equal(index.codes[:, 0], (ids // 3) % 256)
            and [index.item(i).source for i in ids[::3]] == [f"s{i}" for i in ids[::3]])


def race(path: str, saves: int, mode: str, readers: int = 2, limit: float = 300.0) -> dict:
    """A writer process saving ``saves`` times while ``readers`` threads load ``path``."""
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, path, str(saves), mode],
                              env=dict(os.environ, PYTHONPATH=ROOT), stderr=subprocess.PIPE,
                              text=True)
    counts = {"loads": 0, "errors": [], "inconsistent": 0, "sizes": set()}
    lock = threading.Lock()
    deadline = time.monotonic() + limit

    def read() -> None:
        while writer.poll() is None and time.monotonic() < deadline:
            try:
                index = GalleryIndex.load(path)
            except Exception as exc:  # noqa: BLE001 (every failure counts)
                with lock:
                    counts["errors"].append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                counts["loads"] += 1
                counts["sizes"].add(len(index))
                counts["inconsistent"] += not _one_save(index)

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err[-3000:]
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exchange", "no-exchange"])
def test_loads_during_saves_see_one_save_and_never_fail(tmp_path, mode):
    path = str(tmp_path / "idx")
    _first_index(path)
    saves = 100
    got = race(path, saves, mode)
    assert got["errors"] == [], (len(got["errors"]), got["loads"], got["errors"][:5])
    assert got["inconsistent"] == 0, got["inconsistent"]
    # the loads overlapped the saves (not a rate: a loaded machine reads less often)
    assert len(got["sizes"]) >= 3, (got["loads"], sorted(got["sizes"]))
    assert len(got["sizes"]) >= 10, sorted(got["sizes"])     # the loads overlapped the saves
    assert len(GalleryIndex.load(path)) == 3 * (saves + 1)


def test_a_save_between_two_files_of_a_load_is_read_again(tmp_path, monkeypatch):
    """Deterministically: the load has read index.json, then a save swaps the folder and
    deletes the old files; the load reads the new folder from the start."""
    path = str(tmp_path / "idx")
    _first_index(path)
    real, calls = store._read_checked, []

    def save_first(snapshot, manifest):
        if not calls:
            index = GalleryIndex.create(BITS)
            index.add(np.zeros((3, 2), np.uint8), [("p", 1, "s0")] * 3)
            index.add(np.array([[1, 0]] * 3, np.uint8), [("p", 1, "s3")] * 3)
            calls.append(index.save(path))
        return real(snapshot, manifest)

    monkeypatch.setattr(store, "_read_checked", save_first)
    loaded, manifest = GalleryIndex.load_saved(path)
    assert calls and len(loaded) == 6 and manifest["count"] == 6 and _one_save(loaded)


def test_a_folder_moved_aside_just_before_the_load_opens_it_is_read_again(tmp_path,
                                                                          monkeypatch):
    """Deterministically, the instant the suite's no-exchange run hit once in 822 loads: the
    load found the folder present, then a save (on a filesystem that cannot exchange
    folders) renamed it aside before the load opened it. The load used to say "no such
    index folder"; it reads again, and with no save holding the lock puts the aside copy
    back, as a writer would."""
    path = str(tmp_path / "idx")
    _first_index(path)
    real, moved = store.FolderSnapshot, []

    def moved_first(folder):
        if not moved:
            moved.append(folder_swap.sibling(folder, "old"))
            os.rename(folder, moved[0])  # what a save without the exchange does first
        return real(folder)

    monkeypatch.setattr(store, "FolderSnapshot", moved_first)
    loaded, manifest = GalleryIndex.load_saved(path)
    assert moved and len(loaded) == 3 and manifest["count"] == 3
    assert os.path.isdir(path) and not os.path.exists(moved[0])


def test_a_folder_that_keeps_changing_is_reported_not_misread(tmp_path, monkeypatch):
    path = str(tmp_path / "idx")
    _first_index(path)
    monkeypatch.setattr(store.FolderSnapshot, "replaced", lambda self: True)
    os.remove(os.path.join(path, "codes.npy"))      # every try: missing, and "replaced"
    with pytest.raises(IndexFolderError, match=f"replaced by {store.LOAD_ATTEMPTS} saves"):
        GalleryIndex.load(path)


def test_a_really_missing_file_is_still_reported(tmp_path):
    path = str(tmp_path / "idx")
    _first_index(path)
    os.remove(os.path.join(path, "labels.npy"))
    with pytest.raises(IndexFolderError, match=r"labels\.npy: missing; the index is incomplete"):
        GalleryIndex.load(path)


# ------------------------------------------------------------------------ the manifest
def _saved(tmp_path) -> tuple[str, GalleryIndex]:
    index = GalleryIndex.create(BITS, "mih")
    index.add(np.array([[1, 2], [3, 4], [5, 6]], np.uint8),
              [("Zoë", 4, "a.png"), ("李雷", 9, "b.png"), ("x", 4, "c.png")])
    index.remove([1])
    index.model = {"kind": "export", "path": "/exports/m", "num_bits": BITS, "epoch": 7,
                   "fingerprint": "ab" * 32}
    return index.save(str(tmp_path / "idx")), index


def _same(a: GalleryIndex, b: GalleryIndex) -> bool:
    return ((a.num_bits, a.kind, a.next_id, a.model) == (b.num_bits, b.kind, b.next_id, b.model)
            and np.array_equal(a.codes, b.codes) and np.array_equal(a.ids, b.ids)
            and [a.item(i) for i in a.ids] == [b.item(i) for i in b.ids])


def test_a_saved_manifest_carries_a_checksum_of_itself(tmp_path):
    path, _ = _saved(tmp_path)
    with open(os.path.join(path, "index.json"), "rb") as f:
        raw = f.read()
    manifest = json.loads(raw)
    assert set(manifest) == index_manifest.KEYS | {index_manifest.CHECKSUM}
    assert index_manifest.checked(raw, "index.json") == manifest


def test_every_bit_flip_of_the_manifest_is_refused_or_changes_nothing(tmp_path):
    """All 8 single-bit flips at every byte, through the manifest check; then one flip per
    byte (bit = position % 8) through a whole load."""
    path, index = _saved(tmp_path)
    file = os.path.join(path, "index.json")
    with open(file, "rb") as f:
        raw = f.read()
    original = json.loads(raw)
    outcomes = {"refused": 0, "not an index": 0, "same": 0}
    for pos in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[pos] ^= 1 << bit
            try:
                got = index_manifest.checked(bytes(flipped), file)
            except IndexFolderError:
                outcomes["refused"] += 1
                continue
            if got is None:
                outcomes["not an index"] += 1
            else:
                assert got == original, (pos, bit, bytes(flipped[max(0, pos - 20):pos + 20]))
                outcomes["same"] += 1
    assert outcomes["refused"] > 0 and outcomes["not an index"] > 0, outcomes
    for pos in range(len(raw)):
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << (pos % 8)
        with open(file, "wb") as f:
            f.write(flipped)
        try:
            loaded = GalleryIndex.load(path)
        except IndexFolderError:
            continue
        assert _same(loaded, index), (pos, bytes(flipped[max(0, pos - 20):pos + 20]))


def test_an_old_manifest_without_the_checksum_still_loads(tmp_path):
    path = str(tmp_path / "old")
    shutil.copytree(OLD_INDEX, path)
    with open(os.path.join(path, "index.json"), "rb") as f:
        assert index_manifest.CHECKSUM not in json.loads(f.read())
    index = GalleryIndex.load(path)
    assert (len(index), index.num_bits, index.next_id) == (16, 8, 16)
    index.save(path)                                        # the next save adds the checksum
    with open(os.path.join(path, "index.json"), "rb") as f:
        assert index_manifest.CHECKSUM in json.loads(f.read())
    assert _same(GalleryIndex.load(path), index)


def test_an_old_manifest_with_a_renamed_key_is_refused(tmp_path):
    """Without a checksum only the keys can be checked: a lost "model" record would have
    loaded as an index without a model."""
    path = str(tmp_path / "old")
    shutil.copytree(OLD_INDEX, path)
    file = os.path.join(path, "index.json")
    with open(file, "rb") as f:
        raw = f.read()
    with open(file, "wb") as f:
        f.write(raw.replace(b'"model"', b'"modem"'))
    with pytest.raises(IndexFolderError, match=r"index\.json: damaged \(keys differ from a "
                                               r"manifest's: model, modem\)"):
        GalleryIndex.load(path)


def _old_index_with_model(tmp_path, model) -> tuple[str, str, bytes]:
    """A copy of the old-format index (no checksum) whose manifest holds ``model``:
    (folder, its index.json, that file's bytes)."""
    path = str(tmp_path / "old")
    shutil.copytree(OLD_INDEX, path)
    file = os.path.join(path, "index.json")
    with open(file, "rb") as f:
        manifest = json.loads(f.read())
    manifest["model"] = model
    raw = json.dumps(manifest, indent=2).encode()
    with open(file, "wb") as f:
        f.write(raw)
    return path, file, raw


@pytest.mark.parametrize("model, why", [
    ("x", "is not a model record (an object, or null): 'x'"),
    ([1, 2], "is not a model record (an object, or null): [1, 2]"),
    ({"path": 7}, "path must be a string, got 7"),
    ({"num_bits": "8"}, "num_bits must be an integer, got '8'"),
    ({"num_bits": True}, "num_bits must be an integer, got True"),
    ({"num_bits": 12}, "num_bits is 12, the index holds 8-bit codes"),
    ({"epoch": 1.5}, "epoch must be an integer or null, got 1.5"),
    ({"method": ["dcbh"]}, "method must be a string or null, got ['dcbh']"),
    ({"probe_relaxed": "x"}, "probe_relaxed must be rows of numbers, got 'x'"),
    ({"probe_relaxed": [[0.5, None]]}, "probe_relaxed must be rows of numbers")])
def test_an_old_manifest_with_a_damaged_model_record_is_refused_and_never_resealed(
        tmp_path, model, why):
    """Without a checksum a damaged "model" loaded: ``info`` then failed with an internal
    AttributeError, and ``remove`` saved it with a fresh checksum, making it valid for
    good. Every reader and writer now refuses it as damaged, naming the file and field."""
    from face_search import api
    from face_search.errors import SearchInputError

    path, file, raw = _old_index_with_model(tmp_path, model)
    expected = f'{os.path.abspath(path)}: damaged index (index.json: "model"'
    for attempt in (lambda: GalleryIndex.load(path), lambda: api.index_summary(path),
                    lambda: api.remove_from_index(path, ids=[0])):
        with pytest.raises(IndexFolderError) as refused:
            attempt()
        assert str(refused.value).startswith(expected) and why in str(refused.value)
        assert isinstance(refused.value, SearchInputError)  # exit 2, one error line
    with open(file, "rb") as f:
        assert f.read() == raw  # not re-sealed by the refused remove


@pytest.mark.parametrize("model", [
    None, {}, {"path": "/x", "num_bits": 8, "fingerprint": "ab"},
    {"path": "/e", "kind": "run", "num_bits": 8, "fingerprint": "ab", "method": None,
     "checkpoint": None, "epoch": None, "probe_relaxed": [[0.5, -1, 2e-3]]}])
def test_model_records_of_every_known_shape_still_load(tmp_path, model):
    path, _, _ = _old_index_with_model(tmp_path, model)
    assert GalleryIndex.load(path).model == model
