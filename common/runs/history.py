"""A run's ``history.jsonl``: one JSON line per finished epoch, appended durably.

Why a module of its own, free of TensorFlow: the hashing loop
(``common.training.loop``) and the GAN trainer (``dfh_tf.gan``) write the same kind
of file, and tools that only read a run (the reproduce harness, ``augment``'s checks)
must not pay for importing TensorFlow.

Reading is forgiving because a kill can leave the last line torn: lines that are
not JSON objects with an integer ``epoch`` are skipped, and when an epoch appears
twice (a resumed run re-recorded it) the later line wins.
"""

from __future__ import annotations

import json
import os
from typing import Any

from common.io import json_files

HISTORY = "history.jsonl"


def append_history_line(model_dir: str, entry: dict[str, Any], name: str = HISTORY) -> None:
    """Append one epoch's record and fsync it, so a finished epoch's line survives a crash.

    Args:
        model_dir: the run folder.
        entry: a JSON-serialisable record holding ``"epoch"``.
        name: the file's name inside ``model_dir``.
    """
    path = os.path.join(model_dir, name)
    line = json.dumps(entry, sort_keys=True) + "\n"
    with open(path, "a+b") as f:
        if _ends_in_torn_line(f):
            line = "\n" + line  # a kill tore the last line: never glue this one onto it
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _epoch_of(entry: Any) -> int | None:
    if not isinstance(entry, dict):
        return None
    epoch = entry.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        return None
    return epoch


def read_history_lines(model_dir: str, name: str = HISTORY) -> list[dict[str, Any]]:
    """The run's per-epoch records in epoch order, one per epoch; [] when there is no file.

    Args:
        model_dir: the run folder.
        name: the file's name inside ``model_dir``.

    Example:
        >>> [h["epoch"] for h in read_history_lines("runs/dcbh")]  # doctest: +SKIP
        [1, 2, 3]
    """
    path = os.path.join(model_dir, name)
    by_epoch: dict[int, dict[str, Any]] = {}
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                entry = json_files.loads(line)
            except ValueError:
                continue
            epoch = _epoch_of(entry)
            if epoch is not None:
                by_epoch[epoch] = entry
    return [by_epoch[e] for e in sorted(by_epoch)]


def _ends_in_torn_line(f: Any) -> bool:
    """Whether a file opened for appending ends in a line without its newline."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return False
    f.seek(size - 1)
    torn = f.read(1) != b"\n"
    f.seek(0, os.SEEK_END)
    return torn
