"""Exclusive locks on folders a process writes: a run folder, or an output beside its lock.

Why: two processes writing one folder (two trainings into one ``--model_dir``, two exports
to one ``--export_dir``) would each believe they own it. ``fcntl.flock`` locks die with
their process, so a kill never leaves a folder locked.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

from common.errors import ProjectError


class RunLockedError(ProjectError, RuntimeError):
    """Another process is training into the same ``model_dir``."""


@contextlib.contextmanager
def folder_lock(target: str, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive lock on ``.NAME.lock`` beside ``target``; removed on release.

    Raises:
        the exception ``busy(lock_path)`` builds: another process holds it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    lock_path = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise busy(lock_path) from None
        # The holder before us may have unlinked the file: lock the one that is named.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


@contextlib.contextmanager
def run_lock(model_dir: str) -> Iterator[None]:
    """Hold an exclusive lock on ``model_dir`` so two runs never write one folder.

    Raises:
        RunLockedError: another process holds the lock.
    """
    os.makedirs(model_dir, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(os.path.join(model_dir, ".lock"), "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunLockedError(
                f"{model_dir}: another training run is using this folder") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
