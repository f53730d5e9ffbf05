"""What a build or query plans to read: file names that have no UTF-8 form.

Linux allows any bytes in a file name (an old archive gives Latin-1 ones); Python keeps the
undecodable bytes as lone surrogates, which the index (UTF-8 names) cannot store and a
terminal cannot print. A gallery skips such a photo up front, naming it, instead of failing
after every photo is encoded; a query reads it and prints its name escaped.
"""

from __future__ import annotations

import os

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
