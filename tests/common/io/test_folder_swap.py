"""Replacing an output folder deletes only what the writer itself makes (issue 27, class 2).

Every writer that replaces a folder (an export, a gallery index, a photo conversion, the
GAN's augmented split) swaps a complete new folder in and then drops the replaced one. A
file someone else puts into the target at any moment of that must survive: written before
the replaced folder is dropped, the swap is undone (FolderChangedError, the target as it
was); written later still, it is kept in a visible ``NAME.kept-*`` folder. Tried here at
every instant, with and without the atomic exchange, for each writer's notion of its own
files, plus the leftovers of a killed writer.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from common.io import folder_swap
from common.data import photo_output
from common.errors import FolderChangedError
from common.export.folder import export_owns, remove_stale
from common.io.folder_swap import discard_owned, swap_in_place
from dfh_tf.gan import augmentation
from face_search.index import store

WRITERS = {
    "export": (export_owns, {"saved_model.pb": b"pb", "export_info.json": b"{}",
                             "variables/variables.index": b"i",
                             "variables/variables.data-00000-of-00001": b"d"}),
    "index": (store.owns, {"index.json": b"{}", "codes.npy": b"c", "identity_names.json": b"[]"}),
    "photos": (photo_output.owns, {"meta.json": b"{}", "train/part_000.pkl": b"t",
                                   "test/part_000.pkl": b"s"}),
    "augment": (augmentation.owns_split, {"part_000.pkl": b"a", "part_001.pkl": b"b"}),
}


def _write(folder, files: dict) -> None:
    for relative, data in files.items():
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _tree(folder) -> dict:
    found = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


@pytest.fixture(params=[True, False], ids=["exchange", "fallback"])
def exchange(request, monkeypatch):
    if not request.param:  # an OS or filesystem without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(folder_swap, "_exchange", lambda a, b: False)
    return request.param


def _setup(tmp_path, writer: str, previous: bool):
    owns, files = WRITERS[writer]
    target = tmp_path / "out"
    target.mkdir()
    if previous:
        _write(target, {k: b"old " + v for k, v in files.items()})
    new = tmp_path / ".out.tmp-0123456789ab"
    _write(new, files)
    return owns, files, str(target), str(new)


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("previous", [False, True], ids=["empty", "previous"])
def test_a_file_put_in_the_target_while_writing_stops_the_swap(tmp_path, writer, previous,
                                                               exchange):
    owns, files, target, new = _setup(tmp_path, writer, previous)
    before = _tree(target)
    _write(target, {"mine.txt": b"a user's file"})         # during the write
    with pytest.raises(FolderChangedError, match="changed while it was being replaced"):
        swap_in_place(new, target, "test", owns)
    assert _tree(target) == {**before, "mine.txt": b"a user's file"}
    assert sorted(os.listdir(tmp_path)) == ["out"]          # the new folder is gone, all of it


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_file_appearing_after_the_check_is_kept_aside(tmp_path, writer, exchange, monkeypatch):
    """The narrowest window: the replaced folder was checked clean, then a file lands in it
    before its own files are deleted: it is kept, in a folder a person can see."""
    owns, files, target, new = _setup(tmp_path, writer, previous=True)
    real_discard = folder_swap.discard_owned

    def late_writer(folder, owns_):
        if any(v.startswith(b"old ") for v in _tree(folder).values()):
            _write(folder, {"late.txt": b"late"})          # the replaced folder, just now
        return real_discard(folder, owns_)

    monkeypatch.setattr(folder_swap, "discard_owned", late_writer)
    swap_in_place(new, target, "test", owns)
    assert _tree(target) == files
    kept = [n for n in os.listdir(tmp_path) if n.startswith("out.kept-")]
    assert len(kept) == 1 and _tree(tmp_path / kept[0]) == {"late.txt": b"late"}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_clean_replacement_leaves_only_the_new_folder(tmp_path, writer, exchange):
    owns, files, target, new = _setup(tmp_path, writer, previous=True)
    swap_in_place(new, target, "test", owns)
    assert _tree(target) == files and sorted(os.listdir(tmp_path)) == ["out"]


def test_discarding_deletes_only_what_the_writer_owns(tmp_path):
    folder = tmp_path / "f"
    _write(folder, {"saved_model.pb": b"x", "variables/variables.index": b"i",
                    "variables/notes.txt": b"mine", "other/deep.txt": b"mine",
                    "export_info.json": b"{}"})
    os.symlink("/etc", folder / "link")
    left = discard_owned(str(folder), export_owns)
    assert left == ["link", "other/", "variables/notes.txt"]
    assert _tree(folder) == {"variables/notes.txt": b"mine", "other/deep.txt": b"mine"}
    assert os.path.islink(folder / "link") and os.path.exists("/etc")


def test_a_killed_writers_leftovers_are_cleaned_but_a_users_file_in_them_is_kept(tmp_path):
    target = tmp_path / "out"
    stale = tmp_path / ".out.old-0123456789ab"
    _write(stale, {"saved_model.pb": b"x", "mine.txt": b"mine"})
    empty_stale = tmp_path / ".out.tmp-ba9876543210"
    _write(empty_stale, {"saved_model.pb": b"x"})
    remove_stale(str(target))
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 1 and names[0].startswith("out.kept-")
    assert _tree(tmp_path / names[0]) == {"mine.txt": b"mine"}


def test_the_augmented_split_is_never_replaced_over_a_users_file(tmp_path, monkeypatch):
    """End to end through write_augmented: a file written into train/ while the new split
    is written stops the replacement; train/ keeps the old split and the file."""
    x = np.zeros((4, 3072), np.float32)
    y = np.arange(4)
    train = augmentation.write_augmented(str(tmp_path), x, y, {"first": True})
    before = _tree(train)
    real = augmentation.write_pickle_folder

    def with_user(path, *args, **kwargs):
        _write(train, {"notes.txt": b"mine"})
        return real(path, *args, **kwargs)

    monkeypatch.setattr(augmentation, "write_pickle_folder", with_user)
    with pytest.raises(FolderChangedError):
        augmentation.write_augmented(str(tmp_path), x + 1, y, {"second": True}, overwrite=True)
    assert _tree(train) == {**before, "notes.txt": b"mine"}


def test_siblings_skips_a_folder_removed_between_the_listing_and_its_check(tmp_path,
                                                                           monkeypatch):
    """Readers list siblings without the lock: a saver may remove one in between, which
    must not surface as a raw FileNotFoundError from a load."""
    target = str(tmp_path / "idx")
    gone = tmp_path / ".idx.old-0123456789ab"
    kept = tmp_path / ".idx.old-ba9876543210"
    gone.mkdir()
    kept.mkdir()
    real_listdir = os.listdir

    def listdir_then_remove(path):
        names = real_listdir(path)
        if gone.exists():
            gone.rmdir()  # as a saver's clean-up right after the reader's listing
        return names

    monkeypatch.setattr(folder_swap.os, "listdir", listdir_then_remove)
    assert folder_swap.siblings(target, "old") == [str(kept)]
