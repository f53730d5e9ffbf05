"""Compact per-item string columns: millions of names and paths without Python objects.

Why: a 10M-item gallery as Python lists of identity and source strings costs gigabytes
and minutes to save; as one UTF-8 buffer with offsets (sources) and a table of distinct
names with one int32 per item (identities) it is a few arrays, saved with ``np.save``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from common.io.names import printable


def utf8(values: Iterable[str], what: str) -> list[bytes]:
    """Each value as UTF-8 bytes; ValueError naming the first value that has no UTF-8 form
    (a file name of undecodable bytes, which Python keeps as lone surrogates)."""
    encoded = []
    for value in values:
        value = str(value)
        try:
            encoded.append(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(f"{what} is not valid UTF-8 text: {printable(value)}") from None
    return encoded


class TextColumn:
    """Strings stored as one UTF-8 buffer and int64 end offsets (item i: [ends[i-1], ends[i]))."""

    def __init__(self, data: np.ndarray | None = None, ends: np.ndarray | None = None) -> None:
        self.data = np.zeros(0, np.uint8) if data is None else data
        self.ends = np.zeros(0, np.int64) if ends is None else ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        start = int(self.ends[i - 1]) if i > 0 else 0
        return self.data[start:int(self.ends[i])].tobytes().decode("utf-8")

    def extend(self, values: Iterable[str]) -> None:
        self.extend_encoded(utf8(values, "a source"))

    def extend_encoded(self, encoded: list[bytes]) -> None:
        """Append strings already encoded by :func:`utf8` (cannot fail half-way)."""
        if not encoded:
            return
        lengths = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
        offset = int(self.ends[-1]) if len(self.ends) else 0
        self.ends = np.concatenate([self.ends, offset + np.cumsum(lengths)])
        self.data = np.concatenate([self.data, np.frombuffer(b"".join(encoded), np.uint8)])

    def any_ends_with(self, suffixes: Iterable[str]) -> bool:
        """Whether an item ends with one of ``suffixes`` (ASCII, case-insensitive), without
        decoding the items: a scan of millions of paths in one vectorised pass each."""
        starts = np.concatenate([[0], self.ends[:-1]]).astype(np.int64)
        lengths = self.ends - starts
        lower = np.where((self.data >= 65) & (self.data <= 90), self.data + 32, self.data)
        for suffix in suffixes:
            wanted = np.frombuffer(suffix.lower().encode("ascii"), np.uint8)
            long_enough = self.ends[lengths >= len(wanted)]
            if not len(long_enough) or not len(wanted):
                continue
            tail = lower[long_enough[:, None] - len(wanted) + np.arange(len(wanted))]
            if np.any(np.all(tail == wanted, axis=1)):
                return True
        return False

    def keep(self, mask: np.ndarray) -> "TextColumn":
        """The items where ``mask`` is True, in order."""
        starts = np.concatenate([[0], self.ends[:-1]]).astype(np.int64)
        lengths = (self.ends - starts)[mask]
        byte_mask = np.repeat(mask, self.ends - starts)
        return TextColumn(self.data[byte_mask], np.cumsum(lengths).astype(np.int64))

    def check(self, where: str) -> None:
        """ValueError unless the offsets are non-decreasing and end at the buffer's end."""
        if self.data.dtype != np.uint8 or self.data.ndim != 1 or self.ends.dtype != np.int64:
            raise ValueError(f"{where}: expected a uint8 text buffer and int64 offsets")
        if self.ends.ndim != 1 or (len(self.ends) and (
                np.any(np.diff(self.ends) < 0) or self.ends[0] < 0
                or int(self.ends[-1]) != len(self.data))) or (
                not len(self.ends) and len(self.data)):
            raise ValueError(f"{where}: text offsets do not match the text buffer")


class NameColumn:
    """Repeated strings stored as a table of distinct names and one int32 per item."""

    def __init__(self, names: Sequence[str] = (), codes: np.ndarray | None = None) -> None:
        self.names = list(names)
        self.codes = np.zeros(0, np.int32) if codes is None else codes
        self._lookup = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> str:
        return self.names[int(self.codes[i])]

    def code_of(self, name: str) -> int | None:
        """The table position of ``name`` (None if no item ever had it)."""
        return self._lookup.get(name)

    def extend(self, values: Iterable[str]) -> None:
        codes = []
        for value in values:
            value = str(value)
            code = self._lookup.get(value)
            if code is None:
                code = self._lookup[value] = len(self.names)
                self.names.append(value)
            codes.append(code)
        self.codes = np.concatenate([self.codes, np.asarray(codes, np.int32)])

    def keep(self, mask: np.ndarray) -> "NameColumn":
        """The items where ``mask`` is True, with the name table compacted."""
        kept = self.codes[mask]
        used, new_codes = np.unique(kept, return_inverse=True)
        return NameColumn([self.names[i] for i in used], new_codes.astype(np.int32))

    def check(self, where: str) -> None:
        if self.codes.dtype != np.int32:
            raise ValueError(f"{where}: expected int32 identity numbers, got {self.codes.dtype}")
        if self.codes.ndim != 1 or (len(self.codes) and (
                self.codes.min() < 0 or self.codes.max() >= len(self.names))):
            raise ValueError(f"{where}: identity numbers outside the name table")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"{where}: repeated names in the name table")
