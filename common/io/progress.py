"""Progress of long work (a training epoch, a gallery build, a GAN epoch), by tqdm.

Why tqdm: it is the progress bar Python users know, already installed (tensorflow-datasets
depends on it), and it keeps what a hand-written bar has to get right (redraw rate,
terminal width, rate and ETA smoothing). What it does not do is what a log needs: redrawn
``\\r`` lines fill a CI log or a file with thousands of partial lines. So:

* on a terminal: a tqdm bar, redrawn in place, removed when the work ends::

      epoch 3/150:  33%|████▍        | 40/120 [00:05<00:10, 7.8step/s, loss=1.2345, img/s=612]

* anywhere else (a file, a pipe, a CI log): a plain line every ``every`` steps (training:
  ``--log_every_steps``) or every ``every_seconds`` seconds (gallery builds), no ``\\r``::

      epoch 3/150 step 100/900 | loss 1.2345 | 612 img/s | ETA 0:10:03

The environment variable ``FACE_HASHING_PROGRESS`` forces a mode: ``bar``, ``lines`` or
``off`` (nothing until the final line). Unset or ``auto``: a bar on a terminal, lines
elsewhere. The final line (the epoch's summary) is always written, over the bar.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm

ENV_VAR = "FACE_HASHING_PROGRESS"
MODES = ("bar", "lines", "off")


def progress_mode(stream: object) -> str:
    """"bar", "lines" or "off" for ``stream`` (the environment variable first)."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in MODES:
        return forced
    isatty = getattr(stream, "isatty", None)
    try:
        return "bar" if callable(isatty) and isatty() else "lines"
    except (OSError, ValueError):  # a closed or detached stream
        return "lines"


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``?`` when unknown)."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """The progress of ``total`` steps of one piece of work (see the module docstring).

    Args:
        label: what is progressing ("epoch 3/150", "build").
        total: steps in all (None: unknown).
        stream: where to write (default ``sys.stdout``).
        every: in lines mode, a line every this many steps (0: none).
        every_seconds: in lines mode, a line at most this often instead (0: by steps).
        mode: "bar", "lines" or "off"; None chooses (:func:`progress_mode`).
        clock: seconds, monotonic (a test's clock).
        redraw_seconds: the bar is redrawn at most this often.
    """

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None,
                 every: int = 100, every_seconds: float = 0.0, mode: str | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 redraw_seconds: float = 0.1) -> None:
        self.label, self.total = label, total
        self.stream = sys.stdout if stream is None else stream
        self.mode = mode or progress_mode(self.stream)
        self.every, self.every_seconds, self.clock = every, every_seconds, clock
        self.start = self._last_line = clock()
        self.done = 0
        self.counts: dict[str, int] = {}
        self._bar = (tqdm(total=total, desc=label, file=self.stream, leave=False, unit="step",
                          mininterval=redraw_seconds, dynamic_ncols=True)
                     if self.mode == "bar" else None)

    def set_total(self, total: int) -> None:
        """The number of steps, once it is known."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total

    def advance(self, steps: int = 0, **counts: int) -> None:
        """``steps`` more steps done, and running ``counts`` (faces=..., skipped=...)."""
        self.done += steps
        for key, value in counts.items():
            self.counts[key] = self.counts.get(key, 0) + value
        self.update(self.done, **self.counts)

    def update(self, done: int, **figures: float) -> None:
        """``done`` steps so far; ``figures`` (loss=..., img/s ...) shown beside them.

        In lines mode, ``figures`` named ``loss`` is shown with 4 decimals and anything
        given as ``images`` becomes a rate.
        """
        if self._bar is not None:
            shown = {k: f"{v:.4f}" if k == "loss" else f"{v:.0f}" for k, v in
                     self._rates(figures).items()}
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(done - self._bar.n)  # redraws when it is time to
            return
        if self.mode != "lines":
            return
        now = self.clock()
        if self.every_seconds:
            due = now - self._last_line >= self.every_seconds
        else:
            due = self.every > 0 and done % self.every == 0 and (
                self.total is None or done < self.total)
        if due:
            self._last_line = now
            self.write(self.line(done, figures, now))

    def _rates(self, figures: dict[str, float]) -> dict[str, float]:
        elapsed = max(self.clock() - self.start, 1e-9)
        return {("img/s" if k == "images" else k): (v / elapsed if k == "images" else v)
                for k, v in figures.items()}

    def line(self, done: int, figures: dict[str, float], now: float) -> str:
        """The plain progress line (lines mode)."""
        elapsed = max(now - self.start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        parts = [f"{self.label} step {done}{of}"]
        for key, value in figures.items():
            if key == "loss":
                parts.append(f"loss {value:.4f}")
            elif key == "images":
                parts.append(f"{value / elapsed:.0f} img/s")
            else:
                parts.append(f"{value:,.0f} {key}")
        if self.total and done:
            parts.append(f"ETA {format_duration((self.total - done) * elapsed / done)}")
        return " | ".join(parts)

    def write(self, text: str) -> None:
        """A line a person reads (never mixed into the bar)."""
        if self._bar is not None:
            self._bar.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, line: str | None = None) -> None:
        """End the bar (removed from the screen) and write the final line, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if line is not None:
            self.stream.write(line + "\n")
            self.stream.flush()


def epoch_progress(epoch: int, epochs: int, steps: int, stream: TextIO | None,
                   every_steps: int) -> Progress:
    """The progress of one training epoch: ``--log_every_steps`` 0 turns it off (the
    epoch's summary line is still written by :meth:`Progress.finish`)."""
    mode = None if every_steps else "off"
    return Progress(f"epoch {epoch}/{epochs}", steps, stream, every=every_steps, mode=mode)
