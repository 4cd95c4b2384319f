"""Progress lines: plain periodic lines off a terminal (no carriage return), a bar with a percentage on one."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from keywatch.cli.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_carry_percentage_rate_and_time_left() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("replay", 1000, stream=out, every_s=10, clock=clock, tty=False)
    clock.now = 5
    progress.update(100)
    assert out.getvalue() == ""  # not yet: one line per 10 s
    clock.now = 10
    progress.update(250)
    assert out.getvalue() == "replay: 250 of 1,000 records (25.0%), 25/s, 10s so far, about 30s left\n"
    progress.close()
    assert out.getvalue().splitlines()[-1] == "replay: done in 10s: 250 records"
    assert "\r" not in out.getvalue()


def test_without_a_total_there_is_a_count_and_a_rate() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("simulate", None, "requests", stream=out, every_s=1, clock=clock, tty=False)
    clock.now = 2
    progress.update(4000)
    assert out.getvalue() == "simulate: 4,000 requests, 2,000/s, 2s so far\n"


def test_a_terminal_gets_a_bar_with_a_percentage() -> None:
    out = io.StringIO()
    progress = Progress("replay", 200, stream=out, tty=True)
    progress.update(100)
    progress.close()
    assert "50%" in out.getvalue() or "100/200" in out.getvalue()
    assert "replay" in out.getvalue()


@given(st.lists(st.integers(min_value=0, max_value=10**9), max_size=50), st.integers(min_value=0, max_value=10**9))
def test_any_sequence_of_counts_never_fails_and_never_goes_back(counts: list[int], total: int) -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("x", total, stream=out, every_s=0, clock=clock, tty=False)
    best = 0
    for step, count in enumerate(counts):
        clock.now = step + 1.0
        progress.update(count)
        best = max(best, count)
        assert progress.done == best
    progress.close()
    assert "\r" not in out.getvalue()
