"""fsync_path: a file's failed flush is raised (its callers then keep the previous copy);
a folder's is best effort."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from common.io import atomic


def _failing_fsync(monkeypatch, code: int) -> list[str]:
    """Make every os.fsync fail with ``code``; returns the kinds it was called on."""
    calls: list[str] = []

    def fsync(fd: int) -> None:
        calls.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    return calls


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC, errno.EDQUOT])
def test_a_files_failed_flush_is_raised(tmp_path, monkeypatch, code):
    file = tmp_path / "data.bin"
    file.write_bytes(b"x" * 10)
    calls = _failing_fsync(monkeypatch, code)
    with pytest.raises(OSError) as raised:
        atomic.fsync_path(str(file))
    assert raised.value.errno == code and calls == ["file"]


def test_a_folders_failed_flush_is_ignored(tmp_path, monkeypatch):
    calls = _failing_fsync(monkeypatch, errno.EINVAL)
    atomic.fsync_path(str(tmp_path))  # some filesystems refuse to sync folders
    assert calls == ["dir"]


def test_a_missing_file_is_an_error_and_a_missing_folder_is_not(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic.fsync_path(str(tmp_path / "gone.bin"))
    atomic.fsync_path(str(tmp_path))  # and a real folder syncs without error
