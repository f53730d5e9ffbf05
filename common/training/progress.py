"""Progress of a training epoch, shown to the person who runs it.

Why: a full-width epoch on a CPU lasts most of an hour, and the per-epoch summary
line only appears at its end; until then a person cannot tell a working run from a
hung one. So, inside each epoch:

* on a terminal, one line is redrawn in place (``\\r`` and clear-to-end-of-line) with
  the steps done, the running mean loss, images per second and the time left::

      epoch 3/150  [=========>..........]  40/120  loss 1.2345  612 img/s  ETA 0:01:10

* anywhere else (output redirected to a file or a pipe), carriage-return redraws
  would fill the log with thousands of partial lines, so only a plain line is
  written every ``every_steps`` steps::

      epoch 3/150 step 100/900 | loss 1.2345 | 612 img/s | ETA 0:10:03

At the end of the epoch :meth:`EpochProgress.finish` writes the epoch's summary line
(over the bar on a terminal). Everything is written as plain text straight to the
stream, without a logger's prefix, because these are figures a person reads.

The environment variable ``FACE_HASHING_PROGRESS`` forces a mode: ``bar`` (redrawn
line), ``lines`` (plain lines) or ``off`` (nothing during the epoch; the summary line
is still written). Unset, empty or ``auto`` means: a bar when the stream is a
terminal, lines otherwise.

Why not ``keras.utils.Progbar``: it decides interactivity from its own heuristics
(``sys.stdout`` and IPython, not the stream it is given), prints its own per-step
metric formatting and final line, and reads the wall clock directly, so neither the
file/pipe behaviour nor the ETA could be pinned down in tests; it would also make
this module import Keras. The implementation here is small, needs no TensorFlow,
and takes an injectable clock.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from typing import Callable, TextIO

__all__ = [
    "ENV_VAR",
    "EpochProgress",
    "format_duration",
    "is_interactive",
    "progress_mode",
]

ENV_VAR = "FACE_HASHING_PROGRESS"
"""Environment variable that forces the progress mode: ``bar``, ``lines`` or ``off``."""

MAX_WIDTH = 100
"""The redrawn line never exceeds this many columns (nor the terminal's width - 1)."""

REDRAW_INTERVAL_S = 0.1
"""A terminal line is redrawn at most this often (and always at the last step)."""

_CLEAR_TO_EOL = "\x1b[K"
_BAR_MIN, _BAR_MAX = 10, 30
_MODES = ("bar", "lines", "off")


def format_duration(seconds: float) -> str:
    """Formats a duration as ``H:MM:SS``, rounded to the nearest second.

    Args:
      seconds: the duration; negative values count as 0, non-finite ones give "?".

    Returns:
      e.g. ``"0:00:00"``, ``"0:01:00"`` (for 59.6), ``"27:46:40"`` (for 100000).

    Example:
      >>> format_duration(3725.2)
      '1:02:05'
    """
    if not math.isfinite(seconds):
        return "?"
    total = int(round(max(seconds, 0.0)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _isatty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    if not callable(isatty):
        return False
    try:
        return bool(isatty())
    except (OSError, ValueError):  # closed or detached stream
        return False


def progress_mode(stream: object) -> str:
    """Returns the progress mode for ``stream``: ``"bar"``, ``"lines"`` or ``"off"``.

    ``FACE_HASHING_PROGRESS`` (``bar``/``lines``/``off``, any case) wins; otherwise
    (unset, empty, ``auto`` or an unknown value) a terminal gets ``"bar"`` and
    anything else ``"lines"``.

    Args:
      stream: the stream progress is written to; it need not have ``isatty``.

    Example:
      >>> import io
      >>> progress_mode(io.StringIO())
      'lines'
    """
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in _MODES:
        return forced
    return "bar" if _isatty(stream) else "lines"


def is_interactive(stream: object) -> bool:
    """Whether progress on ``stream`` is drawn as a bar redrawn in place.

    True when ``FACE_HASHING_PROGRESS=bar``, or when it does not force a mode and
    ``stream.isatty()`` is true. Safe for streams without ``isatty`` or closed ones.

    Args:
      stream: the stream progress is written to.

    Example:
      >>> class NoTty: pass
      >>> is_interactive(NoTty())
      False
    """
    return progress_mode(stream) == "bar"


class EpochProgress:
    """Shows the progress of one training epoch on a stream.

    Args:
      epoch: the epoch's number as shown (1-based by convention).
      epochs: the number of epochs of the run.
      total_steps: the number of steps in the epoch.
      stream: where to write; default ``sys.stdout`` (looked up at construction).
      interactive: True for a bar redrawn in place, False for plain lines; None
        chooses with :func:`progress_mode` (the environment variable, else
        ``stream.isatty()``), which is also the only way to get mode ``off``.
      every_steps: in lines mode, a line every this many steps (0: none; the last
        step gets no line, :meth:`finish` follows it).
      clock: seconds as a float, monotonic; the epoch's time runs from construction.
      width: columns for the bar line; None reads the terminal's width at each
        redraw. The line is kept within ``min(width - 1, 100)`` columns.

    Example:
      >>> import io
      >>> ticks = iter([0.0, 5.0])
      >>> out = io.StringIO()
      >>> p = EpochProgress(3, 150, 100, stream=out, interactive=False,
      ...                   every_steps=10, clock=lambda: next(ticks))
      >>> p.update(10, 1.23456, 640)
      >>> p.finish("epoch 3/150 | train loss 1.0000")
      >>> print(out.getvalue(), end="")
      epoch 3/150 step 10/100 | loss 1.2346 | 128 img/s | ETA 0:00:45
      epoch 3/150 | train loss 1.0000
    """

    def __init__(
        self,
        epoch: int,
        epochs: int,
        total_steps: int,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        every_steps: int = 100,
        clock: Callable[[], float] = time.perf_counter,
        width: int | None = None,
    ) -> None:
        if total_steps < 0:
            raise ValueError(f"total_steps must be >= 0, got {total_steps}")
        if every_steps < 0:
            raise ValueError(f"every_steps must be >= 0, got {every_steps}")
        self.epoch = epoch
        self.epochs = epochs
        self.total_steps = total_steps
        self.stream = sys.stdout if stream is None else stream
        if interactive is None:
            self.mode = progress_mode(self.stream)
        else:
            self.mode = "bar" if interactive else "lines"
        self.every_steps = every_steps
        self._clock = clock
        self._width = width
        self._start = clock()
        self._last_draw: float | None = None
        self._drawn = False  # a bar line is on screen, not yet ended by a newline
        self._last_line_step = 0

    @property
    def interactive(self) -> bool:
        """Whether the progress is a bar redrawn in place."""
        return self.mode == "bar"

    def update(self, step: int, loss: float, images: int) -> None:
        """Records that ``step`` steps are done, and shows it if it is time to.

        Args:
          step: steps done so far in this epoch (1 after the first step).
          loss: the running mean loss over those steps.
          images: images seen so far in this epoch.
        """
        if self.mode == "off":
            return
        if self.mode == "lines":
            if (
                self.every_steps > 0
                and step < self.total_steps
                and step // self.every_steps > self._last_line_step // self.every_steps
            ):
                self._last_line_step = step
                self._write(self._plain_line(step, loss, images, self._clock()) + "\n")
            return
        now = self._clock()
        last = step >= self.total_steps
        if not last and self._last_draw is not None and now - self._last_draw < REDRAW_INTERVAL_S:
            return
        self._last_draw = now
        self._drawn = True
        self._write("\r" + self._bar_line(step, loss, images, now) + _CLEAR_TO_EOL)

    def finish(self, line: str) -> None:
        """Writes the epoch's final line (over the bar, on a terminal) and a newline.

        Args:
          line: the per-epoch summary, written as is.
        """
        if self._drawn:
            self._write("\r" + line + _CLEAR_TO_EOL + "\n")
            self._drawn = False
        else:
            self._write(line + "\n")

    # -- formatting ---------------------------------------------------------------

    def _figures(self, step: int, images: int, now: float) -> tuple[str, str]:
        """Returns (images per second, ETA) as text."""
        elapsed = now - self._start
        if step <= 0 or elapsed <= 0:
            return "?", "?"
        rate = images / elapsed
        speed = f"{rate:.0f}" if rate >= 10 else f"{rate:.1f}"
        remaining = max(self.total_steps - step, 0)
        return speed, format_duration(remaining * elapsed / step)

    def _plain_line(self, step: int, loss: float, images: int, now: float) -> str:
        speed, eta = self._figures(step, images, now)
        return (
            f"epoch {self.epoch}/{self.epochs} step {step}/{self.total_steps}"
            f" | loss {loss:.4f} | {speed} img/s | ETA {eta}"
        )

    def _columns(self) -> int:
        width = self._width
        if width is None:
            width = shutil.get_terminal_size((MAX_WIDTH + 1, 24)).columns
        # One column short of the terminal: a line filling it exactly can wrap.
        return max(min(width - 1, MAX_WIDTH), 1)

    def _bar_line(self, step: int, loss: float, images: int, now: float) -> str:
        speed, eta = self._figures(step, images, now)
        head = f"epoch {self.epoch}/{self.epochs}"
        tail = f"{step}/{self.total_steps}  loss {loss:.4f}  {speed} img/s  ETA {eta}"
        columns = self._columns()
        room = columns - len(head) - len(tail) - 4 - 2  # two 2-space gaps, brackets
        if room < _BAR_MIN:  # too narrow for a bar: figures only, cut to fit
            return f"{head}  {tail}"[:columns]
        inner = min(room, _BAR_MAX)
        total = self.total_steps
        if step >= total:
            bar = "=" * inner
        else:
            filled = inner * max(step, 0) // total
            bar = "=" * filled + ">" + "." * (inner - filled - 1)
        return f"{head}  [{bar}]  {tail}"

    def _write(self, text: str) -> None:
        self.stream.write(text)
        flush = getattr(self.stream, "flush", None)
        if callable(flush):
            flush()
