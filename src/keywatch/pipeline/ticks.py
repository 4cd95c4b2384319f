"""Event-time ticks in the worker: a watermark per keyed-topic partition and an index of the keys whose state
holds a pending tick, so a detector's timer fires for a key that has gone quiet.

The watermark of a partition is the newest event time detect has seen in it, minus the allowed lateness
(`Engine.watermark`); a tick is due once the watermark reaches it. Both live in memory only: the index is
rebuilt from the table (the ticks are in each key's state) whenever the key cap's index is (at start and after
a rebalance; without a key cap, `KEYWATCH_MAX_KEYS=0`, it learns only the states written since the start, and
an older pending tick runs with its key's next record), and the watermark starts again from the next record.
Nothing
depends on when a tick runs: its alert's time and id derive from the tick's own time, and a key's due ticks
also run before any later record of that key (in the engine).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from keywatch.core.codec import peek


class TickIndex:
    """Per partition: the watermark and a heap of (tick time, key) of states with a pending tick."""

    def __init__(self) -> None:
        self._watermarks: dict[int, int] = {}
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}
        # Per partition, each key's newest entry in the heap: a state written again with the same earliest tick
        # (a detector keeping a timer pending for weeks, written on every record) adds nothing to the heap.
        self._noted: dict[int, dict[bytes, int]] = {}
        self._indexed: set[int] = set()
        self._whole_table = False  # rebuilt from the whole table: every partition is indexed

    def knows(self, partition: int) -> bool:
        """Whether the partition's keys have been indexed."""
        return self._whole_table or partition in self._indexed

    def rebuild(self, items: Iterable[tuple[bytes, bytes]], partition_of: Callable[[bytes], int]) -> None:
        """Index every pending tick of the table (after an assignment or recovery)."""
        self._heaps.clear()
        self._noted.clear()
        self._whole_table = True
        for key, value in items:
            try:
                ticks = peek(value)[1]
            except ValueError:  # undecodable state: it has no tick anyone could run
                continue
            if ticks:
                at, partition = min(ticks.values()), partition_of(key)
                self._heaps.setdefault(partition, []).append((at, key))
                self._noted.setdefault(partition, {})[key] = at
        for heap in self._heaps.values():
            heapq.heapify(heap)

    def index_partition(
        self, partition: int, items: Iterable[tuple[bytes, bytes]], partition_of: Callable[[bytes], int]
    ) -> None:
        """Index one partition not seen before."""
        self._indexed.add(partition)
        heap = self._heaps.setdefault(partition, [])
        for key, value in items:
            if partition_of(key) != partition:
                continue
            try:
                ticks = peek(value)[1]
            except ValueError:
                continue
            if ticks:
                heapq.heappush(heap, (min(ticks.values()), key))
                self._noted.setdefault(partition, {})[key] = min(ticks.values())

    def note(self, partition: int, key: bytes, next_tick: int | None) -> None:
        """`key`'s state was written with its earliest tick at `next_tick` (None: no tick)."""
        if next_tick is not None:
            noted = self._noted.setdefault(partition, {})
            if noted.get(key) == next_tick:
                return  # its entry is in the heap already
            noted[key] = next_tick
            heapq.heappush(self._heaps.setdefault(partition, []), (next_tick, key))

    def advance(self, partition: int, watermark_ms: int) -> int:
        """Move the partition's watermark forward (never back); the watermark now."""
        current = self._watermarks.get(partition)
        if current is None or watermark_ms > current:
            self._watermarks[partition] = current = watermark_ms
        return current

    def due(self, partition: int) -> list[bytes]:
        """The keys with an entry at or before the partition's watermark, each once, removed from the index
        (the caller checks the state: an entry can be stale, and writes note the next tick)."""
        heap = self._heaps.get(partition)
        watermark = self._watermarks.get(partition)
        if not heap or watermark is None:
            return []
        keys: dict[bytes, None] = {}
        noted = self._noted.get(partition, {})
        while heap and heap[0][0] <= watermark:
            at, key = heapq.heappop(heap)
            if noted.get(key) == at:
                del noted[key]
            keys[key] = None
        return list(keys)
