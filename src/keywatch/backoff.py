"""Exponential backoff, shared by every retry loop (Kafka sends, broker waits, HTTP sinks)."""

from __future__ import annotations


class Backoff:
    """Exponential backoff, capped: `initial`, twice that, ... up to `cap` seconds; `reset()` after a success."""

    def __init__(self, initial: float = 0.5, cap: float = 10.0) -> None:
        self.initial = initial
        self.cap = cap
        self._next = initial

    def next(self) -> float:
        """The delay to wait now (and double the one after, up to the cap)."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        """Back to the initial delay."""
        self._next = self.initial
