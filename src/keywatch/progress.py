"""Stall bookkeeping: which assigned partitions have lag and have not moved for how long. Pure, clock given.

A partition *progresses* when its consumer group's position (the committed offset: durable progress) moves, or
when it has no lag. It is *stalled* for the time since it last progressed, counted only while it has lag. What a
worker cannot measure is never a stall: a group whose offsets are unknown (broker unreachable, rebalancing,
recovering state) is forgotten, and its clocks start again at the next measurement, so an outage, a rebalance or
a long recovery does not read as a stall the moment it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

TopicPartitionKey = tuple[str, int]  # (topic, partition): no aiokafka type in this module


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """One assigned partition at its group's latest measurement."""

    group: str
    topic: str
    partition: int
    position: int
    highwater: int
    stalled_seconds: float

    @property
    def lag(self) -> int:
        """Records after the position (never negative)."""
        return max(0, self.highwater - self.position)

    def as_json(self) -> dict[str, str | int | float]:
        """What /readyz and /healthz show of a stalled partition."""
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "lag": self.lag,
            "stalled_seconds": round(self.stalled_seconds, 1),
        }


@dataclass(slots=True)
class _Clock:
    position: int
    since: float  # when it last progressed (or was first measured)


class ProgressTracker:
    """Per group, per assigned partition: position, highwater and how long it has been stalled."""

    def __init__(self, stall_seconds: float, watchdog_seconds: float = 0.0) -> None:
        self.stall_seconds = stall_seconds
        self.watchdog_seconds = watchdog_seconds
        self._clocks: dict[str, dict[TopicPartitionKey, _Clock]] = {}
        self._latest: dict[str, list[PartitionProgress]] = {}

    def observe(self, group: str, offsets: Mapping[TopicPartitionKey, tuple[int, int]] | None, now: float) -> None:
        """Record a measurement of `group` at `now`: (position, highwater) of every partition it has assigned, or
        None when they cannot be known (then the group is forgotten). Partitions no longer assigned are dropped."""
        if offsets is None:
            self.forget(group)
            return
        old = self._clocks.get(group, {})
        clocks: dict[TopicPartitionKey, _Clock] = {}
        latest = []
        for tp, (position, highwater) in sorted(offsets.items()):
            clock = old.get(tp)
            if clock is None or clock.position != position or highwater <= position:
                clock = _Clock(position, now)
            clocks[tp] = clock
            stalled = now - clock.since if highwater > position else 0.0
            latest.append(PartitionProgress(group, tp[0], tp[1], position, highwater, stalled))
        self._clocks[group] = clocks
        self._latest[group] = latest

    def forget(self, group: str) -> None:
        """Drop what is known of `group` (its offsets cannot be measured now)."""
        self._clocks.pop(group, None)
        self._latest.pop(group, None)

    def partitions(self) -> list[PartitionProgress]:
        """Every assigned partition of every group, as last measured."""
        return [p for group in sorted(self._latest) for p in self._latest[group]]

    def lag(self) -> dict[tuple[str, str], int]:
        """Lag in records by (group, topic), summed over the assigned partitions."""
        out: dict[tuple[str, str], int] = {}
        for p in self.partitions():
            out[(p.group, p.topic)] = out.get((p.group, p.topic), 0) + p.lag
        return out

    def stalled(self) -> list[PartitionProgress]:
        """Partitions with lag and no progress for at least `stall_seconds`."""
        return [p for p in self.partitions() if p.lag and p.stalled_seconds >= self.stall_seconds]

    def watchdog_tripped(self) -> list[PartitionProgress]:
        """Partitions stalled for at least `watchdog_seconds` (none when the watchdog is off)."""
        if not self.watchdog_seconds:
            return []
        return [p for p in self.partitions() if p.lag and p.stalled_seconds >= self.watchdog_seconds]


class RecoveryClock:
    """How long the worker has been recovering its state without a break (the watchdog's other half).

    A recovery makes the offsets unknown, so it is never a stall; but a recovery that never ends (seen once in the
    chaos soak: a survivor reading two changelog partitions for ever) leaves the worker not ready for good, and
    only a restart helps. `KEYWATCH_WATCHDOG_SECONDS` bounds it too: a large state takes longer (100,000 keys:
    about 20 s), so set the watchdog above the longest recovery expected.
    """

    def __init__(self) -> None:
        self._since: float | None = None

    def observe(self, recovering: bool, now: float) -> None:
        """Record whether the worker is recovering at `now`."""
        if not recovering:
            self._since = None
        elif self._since is None:
            self._since = now

    def seconds(self, now: float) -> float:
        """Seconds the current recovery has lasted at `now` (0 when not recovering)."""
        return 0.0 if self._since is None else now - self._since
