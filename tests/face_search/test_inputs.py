"""What a build or query plans to read: file names that have no UTF-8 form.

Linux allows any bytes in a file name (an old archive gives Latin-1 ones); Python keeps the
undecodable bytes as lone surrogates, which the index (UTF-8 names) cannot store and a
terminal cannot print. A gallery skips such a photo up front, naming it, instead of failing
after every photo is encoded; a query reads it and prints its name escaped.

And which files a folder's layout leaves unread: each is listed as skipped with the reason,
a folder of pickle files and sub-folders (neither layout) is refused, and so is a folder
with nothing to read, instead of giving no face without a word.
"""

from __future__ import annotations

import os

import pytest

from face_search.errors import GalleryInputError
from face_search.inputs import plan
from face_search.report import shown_path

PNG = b"\x89PNG\r\n\x1a\n"  # planning looks at names only: the contents are never read


def _gallery(tmp_path) -> tuple[str, str]:
    root = os.fsencode(tmp_path / "gallery")
    for person, photo in [(b"Ann", b"1.png"), (b"Jos\xe9", b"2.png"), (b"Bob", b"caf\xe9.png")]:
        os.makedirs(os.path.join(root, person), exist_ok=True)
        with open(os.path.join(root, person, photo), "wb") as f:
            f.write(PNG)
    return os.fsdecode(root), os.fsdecode(os.path.join(root, b"Jos\xe9", b"2.png"))


def test_a_gallery_skips_photos_whose_names_have_no_utf8_form(tmp_path):
    root, _ = _gallery(tmp_path)
    units, skipped = plan([root], gallery=True)
    assert [(os.path.basename(u.path), u.identity) for u in units] == [("1.png", "Ann")]
    assert sorted(os.fsencode(os.path.relpath(s.source, root)) for s in skipped) == [
        b"Bob/caf\xe9.png", b"Jos\xe9/2.png"]
    assert all("not valid UTF-8" in s.reason and "rename it" in s.reason for s in skipped)


def test_a_query_reads_them_and_shows_their_names_escaped(tmp_path):
    root, photo = _gallery(tmp_path)
    units, skipped = plan([root], gallery=False)
    assert len(units) == 3 and not skipped
    assert shown_path(photo).endswith("Jos\\xe9" + os.sep + "2.png")
    shown_path(photo).encode("utf-8")  # printable as it is shown
    assert shown_path("\ud800x") == "\\ud800x"  # a lone surrogate no byte gave


def test_a_query_photos_name_is_escaped_in_json_output(tmp_path):
    import json

    from face_search.report import query_json
    from face_search.searcher import QueryResult

    _, photo = _gallery(tmp_path)
    text = query_json([QueryResult(photo, None, [])], {"num_bits": 12})
    text.encode("utf-8")  # printable: no lone surrogate left
    assert json.loads(text)["queries"][0]["source"].endswith("Jos\\xe9/2.png")


def _write(folder, *names: str) -> str:
    for name in names:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not name.endswith("/"):
            with open(path, "wb") as f:
                f.write(PNG)
    return str(folder)


@pytest.mark.parametrize("gallery", [True, False])
def test_pickle_files_beside_sub_folders_are_refused_naming_the_folder(tmp_path, gallery):
    """``build --gallery pkx/train`` (part_000.pkl and an empty sub-folder) read it as a photo
    gallery and dropped the pickle unsaid: an existing index became empty, exit 0."""
    root = _write(tmp_path / "train", "part_000.pkl", "extra/")
    with pytest.raises(GalleryInputError) as refused:
        plan([root], gallery=gallery)
    assert str(refused.value) == (
        f"{root}: holds both pickle files (part_000.pkl) and sub-folders (extra), so it is "
        "neither a pickle folder (files only) nor a photo gallery (DIR/<identity>/<photo>); "
        "move the pickle files into a folder of their own, or the sub-folders out of it")
    root = _write(tmp_path / "mixed", "ann/1.png", "bob/2.png", "a.pkl", "b.PKL", "c.pickle",
                  "d.pkl")
    with pytest.raises(GalleryInputError, match=r"mixed: holds both pickle files \(a\.pkl, "
                                                r"b\.PKL, c\.pickle, \.\.\. \(1 more\)\) "
                                                r"and sub-folders \(ann, bob\)"):
        plan([root], gallery=gallery)


def test_other_files_beside_identity_folders_are_listed_as_skipped(tmp_path):
    root = _write(tmp_path / "gallery", "ann/1.png", "ann/notes.txt", "README.txt", "top.png")
    units, skipped = plan([root], gallery=True)
    assert [(os.path.basename(u.path), u.identity) for u in units] == [("1.png", "ann")]
    layout = "a folder with sub-folders is a photo gallery DIR/<identity>/<photo>"
    assert [(os.path.relpath(s.source, root), s.reason) for s in skipped] == [
        ("README.txt", f"not a photo ({layout})"), ("top.png", "not inside an identity folder"),
        (os.path.join("ann", "notes.txt"), "not a photo")]
    units, skipped = plan([root], gallery=False)  # a query reads the top photo too
    assert sorted(os.path.basename(u.path) for u in units) == ["1.png", "top.png"]
    assert sorted(os.path.basename(s.source) for s in skipped) == ["README.txt", "notes.txt"]


@pytest.mark.parametrize("gallery", [True, False])
def test_a_folder_with_nothing_to_read_is_refused_like_an_empty_one(tmp_path, gallery):
    """A query of such a folder printed nothing, exit 0; a build wrote an empty index."""
    root = _write(tmp_path / "empty_people", "ann/", "bob/")
    with pytest.raises(GalleryInputError) as refused:
        plan([root], gallery=gallery)
    assert str(refused.value) == (
        f"{root}: no photo or pickle file to read in it (a folder with sub-folders is a photo "
        "gallery DIR/<identity>/<photo>, and its sub-folders hold none)")
    root = _write(tmp_path / "notes", "ann/", "README.txt")
    with pytest.raises(GalleryInputError) as refused:
        plan([root], gallery=gallery)
    assert str(refused.value) == (
        f"{root}: no photo or pickle file to read in it (1 input(s) skipped: "
        f"{os.path.join(root, 'README.txt')}: not a photo (a folder with sub-folders is a "
        "photo gallery DIR/<identity>/<photo>))")
    if gallery:  # photos at the top of a gallery are skipped: nothing is left to read
        root = _write(tmp_path / "loose", "ann/", "1.png", "2.png")
        with pytest.raises(GalleryInputError, match=r"loose: no photo or pickle file to read "
                                                    r"in it \(2 input\(s\) skipped: .*1\.png: "
                                                    r"not inside an identity folder; \.\.\.\)"):
            plan([root], gallery=True)
