"""Progress of long CLI work (replay, simulate) on stderr.

On a terminal: a tqdm bar with the percentage and the time left when the size of the work is known, a counter
and a rate when not. Anywhere else (a file, a pipe, a CI log): one plain line every `every_s` seconds, never a
carriage return, then one closing line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Reports how far a job is: `update(done)` with the count so far, `close()` at the end."""

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str = "records",
        *,
        stream: IO[str] | None = None,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        tty: bool | None = None,
        already_s: float = 0.0,
    ) -> None:
        self.what = what
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self._clock = clock
        self._started = clock() - already_s  # work done before this report was made counts too
        self._last_line = self._started
        self.done = 0
        is_tty = self.stream.isatty() if tty is None else tty
        self._bar: tqdm[Any] | None = None
        if is_tty:
            self._bar = tqdm(
                total=self.total,
                desc=what,
                unit=f" {unit}" if self.total is None else unit,
                unit_scale=True,
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
            )

    def update(self, done: int) -> None:
        """The job has done `done` units so far (a running total, not an increment)."""
        if done < self.done:
            return
        if self._bar is not None:
            self._bar.update(done - self.done)
            self.done = done
            return
        self.done = done
        now = self._clock()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        """The plain progress line: count, share of the total and time left when the total is known, rate."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.what}: {self.done:,}"
        if self.total is not None:
            share = min(self.done / self.total, 1.0)
            text += f" of {self.total:,} {self.unit} ({share:.1%})"
        else:
            text += f" {self.unit}"
        text += f", {rate:,.0f}/s, {_duration(elapsed)} so far"
        if self.total is not None and rate > 0 and self.done < self.total:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        return text

    def close(self, summary: str | None = None) -> None:
        """End the report: the bar's last state, or one closing plain line (with `summary` if given)."""
        if self._bar is not None:
            self._bar.close()
            if summary:
                self.stream.write(f"{self.what}: {summary}\n")
            return
        elapsed = self._clock() - self._started
        tail = summary or f"{self.done:,} {self.unit}"
        self.stream.write(f"{self.what}: done in {_duration(elapsed)}: {tail}\n")
        self.stream.flush()
