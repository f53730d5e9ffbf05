"""Listing a photo folder: linked sub-folders are read, and a link loop ends."""

from __future__ import annotations

from common.data.photo_folder import list_photo_folder


def test_linked_sub_folders_are_read_and_a_link_loop_is_listed_once(tmp_path):
    archive = tmp_path / "archive" / "bob2019"
    archive.mkdir(parents=True)
    (archive / "a.jpg").write_bytes(b"")
    src = tmp_path / "photos"
    (src / "bob").mkdir(parents=True)
    (src / "bob" / "b.jpg").write_bytes(b"")
    (src / "bob" / "2019").symlink_to(archive, target_is_directory=True)
    (src / "ann").mkdir()
    (src / "ann" / "c.png").write_bytes(b"")
    (src / "ann" / "again").symlink_to(src / "ann", target_is_directory=True)  # a loop
    listed = list_photo_folder(src)
    assert [(i.name, i.photos) for i in listed.identities] == [
        ("ann", ("ann/c.png",)), ("bob", ("bob/2019/a.jpg", "bob/b.jpg"))]
    assert listed.ignored == ("ann/again/ (a folder already read: link loop)",)
