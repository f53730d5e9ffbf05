"""common.io.progress: a tqdm bar on a terminal, plain lines elsewhere, the summary always."""

from __future__ import annotations

import io

import pytest

from common.io.progress import ENV_VAR, Progress, epoch_progress, format_duration, progress_mode


class Clock:
    def __init__(self, *ticks: float):
        self.ticks = list(ticks)

    def __call__(self) -> float:
        return self.ticks.pop(0) if len(self.ticks) > 1 else self.ticks[0]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_mode_follows_the_stream_unless_the_environment_forces_one(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert progress_mode(Terminal()) == "bar" and progress_mode(io.StringIO()) == "lines"
    for forced in ("bar", "lines", "off"):
        monkeypatch.setenv(ENV_VAR, forced)
        assert progress_mode(io.StringIO()) == forced
    monkeypatch.setenv(ENV_VAR, "auto")
    assert progress_mode(Terminal()) == "bar"


def test_lines_every_n_steps_with_loss_rate_and_eta():
    out = io.StringIO()
    p = Progress("epoch 3/150", 25, out, every=10, mode="lines", clock=Clock(0.0, 5.0, 10.0))
    # the clock reads 0 at the start, 5 after step 1, 10 from step 2 on
    for step in range(1, 26):
        p.update(step, loss=1.23456, images=64 * step)
    p.finish("epoch 3/150 | train loss 1.0000")
    assert out.getvalue().splitlines() == [
        "epoch 3/150 step 10/25 | loss 1.2346 | 64 img/s | ETA 0:00:15",    # 640 images in 10 s
        "epoch 3/150 step 20/25 | loss 1.2346 | 128 img/s | ETA 0:00:02",   # 5 steps at 0.5 s
        "epoch 3/150 | train loss 1.0000"]


def test_lines_by_time_with_counts_and_an_unknown_total():
    out = io.StringIO()
    p = Progress("build", None, out, every_seconds=5.0, mode="lines",
                 clock=Clock(0.0, 1.0, 6.0, 7.0))
    p.advance(1, faces=10)
    p.advance(1, faces=10, skipped=1)
    p.advance(1, faces=10)
    assert out.getvalue().splitlines() == ["build step 2 | 20 faces | 1 skipped"]
    assert p.done == 3 and p.counts == {"faces": 30, "skipped": 1}


def test_off_writes_only_the_final_line_and_zero_steps_means_off():
    out = io.StringIO()
    p = epoch_progress(1, 2, 100, out, every_steps=0)
    for step in range(1, 101):
        p.update(step, loss=0.5, images=step)
    p.finish("summary")
    assert out.getvalue() == "summary\n"


def test_a_bar_on_a_terminal_is_removed_before_the_summary():
    out = Terminal()
    p = Progress("epoch 1/1", 5, out, mode="bar", redraw_seconds=0)
    for step in range(1, 6):
        p.update(step, loss=0.25, images=32 * step)
    p.finish("epoch 1/1 | train loss 0.2500")
    text = out.getvalue()
    assert "\r" in text and "loss=0.2500" in text   # tqdm redrew a bar
    assert text.endswith("epoch 1/1 | train loss 0.2500\n")


@pytest.mark.parametrize("seconds, shown", [(0, "0:00:00"), (65.4, "0:01:05"),
                                            (3725, "1:02:05"), (float("nan"), "?"),
                                            (-1, "?")])
def test_durations(seconds, shown):
    assert format_duration(seconds) == shown
