"""One progress line every few seconds on stderr, so a long build shows it is moving."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts faces and inputs done; prints at most every ``every_s`` seconds."""

    def __init__(self, label: str, total_inputs: int | None = None, every_s: float = 5.0,
                 stream: TextIO | None = None) -> None:
        self.label = label
        self.total_inputs = total_inputs
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self.faces = 0
        self.inputs = 0
        self.skipped = 0
        self._start = time.perf_counter()
        self._last = self._start

    def advance(self, faces: int = 0, inputs: int = 0, skipped: int = 0) -> None:
        self.faces += faces
        self.inputs += inputs
        self.skipped += skipped
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            self.print_line()

    def print_line(self, final: bool = False) -> None:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        of = f"/{self.total_inputs:,}" if self.total_inputs is not None else ""
        done = "done: " if final else ""
        print(f"{self.label}: {done}{self.faces:,} faces encoded from {self.inputs:,}{of} "
              f"inputs, {self.skipped:,} skipped, {elapsed:.1f} s ({self.faces / elapsed:,.0f} "
              "faces/s)", file=self.stream, flush=True)
