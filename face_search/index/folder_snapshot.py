"""Read a folder's files all from one folder, while a writer may swap another into its path.

An index save swaps a complete new folder into the index's path (``renameat2``
``RENAME_EXCHANGE``) and then deletes the replaced folder's files. A reader that opened
each file by path could take ``index.json`` from the old folder and the data from the
new one (a false "damaged: SHA-256 differs"), or find an old file already deleted (a
false "missing"): 78 of 40,495 loads failed during 150 saves. Here the folder is opened
once (``O_DIRECTORY``) and every file relative to that descriptor, so all reads come from
one folder, and a file once opened stays readable after it is deleted. A file missing
while the path now names another folder means a swap came between:
:class:`FolderReplaced`, and the caller reads the new folder from the start.
"""

from __future__ import annotations

import os
from typing import BinaryIO


class FolderReplaced(Exception):
    """The path was swapped to another folder while its files were read: read it again."""


class FolderSnapshot:
    """The folder at ``path`` when opened, however the path changes afterwards.

    Raises:
        FileNotFoundError, NotADirectoryError: no folder at ``path``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> "FolderSnapshot":
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)

    def _opener(self, name: str, flags: int) -> int:
        return os.open(name, flags, dir_fd=self._fd)

    def open(self, name: str) -> BinaryIO:
        """The file ``name`` of this folder, opened for binary reading.

        Raises:
            FolderReplaced: it is missing and the path names another folder now.
            OSError: it cannot be opened (FileNotFoundError: missing from this folder).
        """
        try:
            return open(name, "rb", opener=self._opener)
        except FileNotFoundError:
            if self.replaced():
                raise FolderReplaced(self.path) from None
            raise

    def replaced(self) -> bool:
        """Whether the path no longer names this folder (swapped, or moved away)."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        held = os.fstat(self._fd)
        return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)
