"""Tests for common.training.progress: exact output with fake streams and a fake clock."""

from __future__ import annotations

import doctest
import io

import pytest

from common.training import progress
from common.training.progress import (
    ENV_VAR,
    EpochProgress,
    format_duration,
    is_interactive,
    progress_mode,
)

CLEAR = "\x1b[K"


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


class NoIsattyStream:
    """A writable stream without isatty (nor flush)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)


class BrokenIsattyStream(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


class FlushCountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


@pytest.fixture(autouse=True)
def _no_forced_mode(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


# -- format_duration ----------------------------------------------------------------


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0:00:00"),
        (0.4, "0:00:00"),
        (59.4, "0:00:59"),
        (59.6, "0:01:00"),
        (61, "0:01:01"),
        (3599.6, "1:00:00"),
        (3600, "1:00:00"),
        (3725.2, "1:02:05"),
        (100000, "27:46:40"),
        (360000, "100:00:00"),
        (-5, "0:00:00"),
        (float("inf"), "?"),
        (float("nan"), "?"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# -- lines mode (file / pipe) ---------------------------------------------------------


def test_lines_every_steps_and_none_at_last_step():
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(3, 150, 25, stream=out, interactive=False, every_steps=10, clock=clock)
    for step in range(1, 26):
        clock.now = step * 0.5  # 2 steps/s, 32 images a step -> 64 img/s
        p.update(step, 1.0 + 1.0 / step, images=32 * step)
    p.finish("epoch 3/150 | train loss 1.0400 | test loss 1.1000")
    assert out.getvalue() == (
        "epoch 3/150 step 10/25 | loss 1.1000 | 64 img/s | ETA 0:00:08\n"
        "epoch 3/150 step 20/25 | loss 1.0500 | 64 img/s | ETA 0:00:02\n"
        "epoch 3/150 | train loss 1.0400 | test loss 1.1000\n"
    )
    assert "\r" not in out.getvalue()


def test_lines_eta_from_measured_rate():
    clock = FakeClock(100.0)  # the epoch's time starts at construction
    out = io.StringIO()
    p = EpochProgress(1, 2, 100, stream=out, interactive=False, every_steps=10, clock=clock)
    clock.now = 105.0
    p.update(10, 0.5, images=640)  # 10 steps in 5 s, 90 left -> 45 s
    assert out.getvalue() == "epoch 1/2 step 10/100 | loss 0.5000 | 128 img/s | ETA 0:00:45\n"


def test_lines_unknown_rate_before_time_passes():
    out = io.StringIO()
    p = EpochProgress(1, 1, 10, stream=out, interactive=False, every_steps=1, clock=FakeClock())
    p.update(1, 2.0, images=8)
    assert out.getvalue() == "epoch 1/1 step 1/10 | loss 2.0000 | ? img/s | ETA ?\n"


def test_lines_slow_rate_has_a_decimal():
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(1, 1, 10, stream=out, interactive=False, every_steps=1, clock=clock)
    clock.now = 4.0
    p.update(1, 2.0, images=2)
    assert out.getvalue() == "epoch 1/1 step 1/10 | loss 2.0000 | 0.5 img/s | ETA 0:00:36\n"


def test_lines_every_steps_zero_prints_only_finish():
    out = io.StringIO()
    p = EpochProgress(1, 1, 500, stream=out, interactive=False, every_steps=0, clock=FakeClock())
    for step in range(1, 501):
        p.update(step, 1.0, images=step)
    p.finish("done")
    assert out.getvalue() == "done\n"


def test_lines_when_updates_skip_steps():
    out = io.StringIO()
    p = EpochProgress(1, 1, 50, stream=out, interactive=False, every_steps=10, clock=FakeClock())
    for step in (7, 13, 14, 27, 50):
        p.update(step, 1.0, images=step)
    steps = [line.split()[3] for line in out.getvalue().splitlines()]
    assert steps == ["13/50", "27/50"]


def test_flushes_after_each_write():
    out = FlushCountingStream()
    p = EpochProgress(1, 1, 4, stream=out, interactive=False, every_steps=1, clock=FakeClock())
    for step in range(1, 5):
        p.update(step, 1.0, images=step)
    p.finish("done")
    assert out.writes == 4  # steps 1-3 and finish
    assert out.flushes == out.writes


def test_default_stream_is_stdout(capsys):
    p = EpochProgress(1, 1, 3, interactive=False, every_steps=1, clock=FakeClock())
    p.update(1, 1.0, images=1)
    p.finish("done")
    assert capsys.readouterr().out == (
        "epoch 1/1 step 1/3 | loss 1.0000 | ? img/s | ETA ?\ndone\n"
    )


def test_rejects_negative_counts():
    with pytest.raises(ValueError):
        EpochProgress(1, 1, -1, stream=io.StringIO())
    with pytest.raises(ValueError):
        EpochProgress(1, 1, 10, stream=io.StringIO(), every_steps=-1)


# -- bar mode (terminal) --------------------------------------------------------------


def _redraws(text: str) -> list[str]:
    """The lines drawn with carriage returns, without the clear-to-end-of-line."""
    return [part.removesuffix(CLEAR) for part in text.split("\r")[1:]]


def test_bar_exact_line_and_eta():
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(3, 150, 100, stream=out, interactive=True, clock=clock, width=101)
    clock.now = 5.0
    p.update(10, 1.2345, images=640)  # 10 steps in 5 s, 90 left -> 45 s
    bar = "=" * 3 + ">" + "." * 26  # 30 wide, 10% done
    assert out.getvalue() == (
        f"\repoch 3/150  [{bar}]  10/100  loss 1.2345  128 img/s  ETA 0:00:45{CLEAR}"
    )


def test_bar_throttled_by_clock_and_last_step_always_drawn():
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(1, 5, 6, stream=out, interactive=True, clock=clock, width=101)
    for step in range(1, 6):  # 5 updates within 0.05 s
        clock.now = step * 0.01
        p.update(step, 1.0, images=10 * step)
    assert out.getvalue().count("\r") == 1
    clock.now = 0.06  # still within 0.1 s of the first redraw, but the last step
    p.update(6, 0.9, images=60)
    redraws = _redraws(out.getvalue())
    assert len(redraws) == 2
    assert redraws[0].startswith("epoch 1/5  [=====>") and "  1/6  " in redraws[0]
    assert redraws[1] == "epoch 1/5  [" + "=" * 30 + "]  6/6  loss 0.9000  1000 img/s  ETA 0:00:00"


def test_bar_redraws_after_interval():
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(1, 1, 100, stream=out, interactive=True, clock=clock, width=101)
    for step, now in [(1, 0.0), (2, 0.05), (3, 0.1), (4, 0.15), (5, 0.21)]:
        clock.now = now
        p.update(step, 1.0, images=step)
    steps = [line.split()[3] for line in _redraws(out.getvalue())]
    assert steps == ["1/100", "3/100", "5/100"]


def test_bar_finish_overwrites_and_ends_with_newline():
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(2, 2, 2, stream=out, interactive=True, clock=clock, width=101)
    clock.now = 1.0
    p.update(1, 1.0, images=4)
    clock.now = 2.0
    p.update(2, 1.0, images=8)
    p.finish("epoch 2/2 | train loss 1.0000")
    text = out.getvalue()
    assert text.endswith("\repoch 2/2 | train loss 1.0000" + CLEAR + "\n")
    assert text.count("\n") == 1
    assert _redraws(text)[1].split()[3] == "2/2"


def test_bar_finish_without_any_redraw_is_a_plain_line():
    out = io.StringIO()
    p = EpochProgress(1, 1, 10, stream=out, interactive=True, clock=FakeClock())
    p.finish("done")
    assert out.getvalue() == "done\n"


@pytest.mark.parametrize("width", [40, 60, 80, 101, 200])
def test_bar_fits_the_width(width):
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(123, 150, 12000, stream=out, interactive=True, clock=clock, width=width)
    clock.now = 3.0
    p.update(4000, 12.3456, images=128000)
    (line,) = _redraws(out.getvalue())
    assert len(line) <= min(width - 1, 100)
    assert "4000/12000" in line or width < 45


def test_bar_narrow_terminal_drops_the_bar():
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(1, 1, 10, stream=out, interactive=True, clock=clock, width=60)
    clock.now = 1.0
    p.update(5, 1.0, images=50)
    (line,) = _redraws(out.getvalue())
    assert line == "epoch 1/1  5/10  loss 1.0000  50 img/s  ETA 0:00:01"


def test_bar_width_from_terminal_size(monkeypatch):
    monkeypatch.setenv("COLUMNS", "70")  # shutil.get_terminal_size reads it first
    clock = FakeClock()
    out = io.StringIO()
    p = EpochProgress(1, 1, 100, stream=out, interactive=True, clock=clock)
    clock.now = 1.0
    p.update(50, 1.0, images=50)
    (line,) = _redraws(out.getvalue())
    assert len(line) <= 69
    assert "[" in line


# -- modes: isatty and the environment variable -----------------------------------------


def test_mode_follows_isatty():
    assert is_interactive(TtyStream())
    assert not is_interactive(io.StringIO())
    assert EpochProgress(1, 1, 1, stream=TtyStream()).mode == "bar"
    assert EpochProgress(1, 1, 1, stream=io.StringIO()).mode == "lines"


def test_stream_without_isatty_is_not_interactive():
    stream = NoIsattyStream()
    assert not is_interactive(stream)
    assert progress_mode(stream) == "lines"
    p = EpochProgress(1, 1, 3, stream=stream, every_steps=1, clock=FakeClock())
    p.update(1, 1.0, images=1)
    p.finish("done")
    assert "".join(stream.parts) == "epoch 1/1 step 1/3 | loss 1.0000 | ? img/s | ETA ?\ndone\n"


def test_broken_isatty_is_not_interactive():
    assert not is_interactive(BrokenIsattyStream())


@pytest.mark.parametrize(
    "value, stream_cls, mode",
    [
        ("bar", io.StringIO, "bar"),
        ("BAR", io.StringIO, "bar"),
        ("lines", TtyStream, "lines"),
        (" Lines ", TtyStream, "lines"),
        ("off", TtyStream, "off"),
        ("off", io.StringIO, "off"),
        ("auto", TtyStream, "bar"),
        ("", io.StringIO, "lines"),
        ("bogus", TtyStream, "bar"),
    ],
)
def test_env_var_forces_mode(monkeypatch, value, stream_cls, mode):
    monkeypatch.setenv(ENV_VAR, value)
    stream = stream_cls()
    assert progress_mode(stream) == mode
    assert is_interactive(stream) == (mode == "bar")
    assert EpochProgress(1, 1, 10, stream=stream).mode == mode


def test_env_bar_draws_on_a_file(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "bar")
    out = io.StringIO()
    p = EpochProgress(1, 1, 2, stream=out, clock=FakeClock(), width=101)
    p.update(1, 1.0, images=1)
    assert out.getvalue().startswith("\repoch 1/1  [")


def test_env_lines_on_a_terminal(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "lines")
    out = TtyStream()
    p = EpochProgress(1, 1, 3, stream=out, every_steps=1, clock=FakeClock())
    p.update(1, 1.0, images=1)
    p.finish("done")
    assert out.getvalue() == "epoch 1/1 step 1/3 | loss 1.0000 | ? img/s | ETA ?\ndone\n"


def test_env_off_prints_only_the_epoch_line(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "off")
    out = TtyStream()
    p = EpochProgress(1, 1, 200, stream=out, every_steps=1, clock=FakeClock())
    for step in range(1, 201):
        p.update(step, 1.0, images=step)
    assert out.getvalue() == ""
    p.finish("epoch 1/1 | train loss 1.0000")
    assert out.getvalue() == "epoch 1/1 | train loss 1.0000\n"


def test_explicit_interactive_overrides_env(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "off")
    assert EpochProgress(1, 1, 1, stream=io.StringIO(), interactive=True).mode == "bar"
    assert EpochProgress(1, 1, 1, stream=TtyStream(), interactive=False).mode == "lines"


def test_docstring_examples():
    result = doctest.testmod(progress, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4
    assert result.failed == 0
