"""The key cap: at most so many keys with state per keyed-topic partition, the least recently seen evicted first.

`recency` and `registry_recency` give a key's eviction order (the newest event time its registry entry knows);
`KeyCap` keeps the in-memory index of keys per partition and says which keys to evict as states are written.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable
from typing import Any

from keywatch.core.codec import peek
from keywatch.core.state import KeyRegistryEntry
from keywatch.pipeline.partitioner import partition_of

log = logging.getLogger(__name__)

_RECENCY_FIELDS = ("last_seen_ms", "created_ms", "revoked_ms", "role_changed_ms")


def recency(registry: dict[str, Any]) -> int:
    """When a key was last heard of (event time, ms) from its serialised registry entry: its eviction order."""
    times = [registry.get(f) for f in _RECENCY_FIELDS]
    return max((t for t in times if isinstance(t, int)), default=0)


def registry_recency(entry: KeyRegistryEntry) -> int:
    """`recency` of a decoded registry entry (what detect has in hand, without serialising it)."""
    times = [getattr(entry, f) for f in _RECENCY_FIELDS]
    return max((t for t in times if t is not None), default=0)


class KeyCap:
    """Bounds the keys with state: at most `per_partition` keys per partition of the keyed topic.

    The cap is per partition so that it means the same on every worker whatever the assignment (the total over
    all workers is at most `max_keys`), and so that an eviction happens in the partition of the event that
    caused it (faust writes the deletion to that changelog partition). Beyond the cap the key least recently
    seen in event time goes (ties: the smaller key), never the key being processed. The index is in memory only:
    after a rebalance or a restart it is rebuilt from the table (`stale`), so it is a function of the state.
    """

    def __init__(self, max_keys: int, partitions: int) -> None:
        self.partitions = partitions
        self.per_partition = max(1, -(-max_keys // partitions))
        self.stale = True
        self._recency: dict[int, dict[bytes, int]] = {}
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}

    def partition_of(self, key: bytes) -> int:
        """The keyed-topic partition of a key (Kafka's default partitioner, which the producer uses)."""
        return partition_of(key, self.partitions)

    def __len__(self) -> int:
        return sum(len(r) for r in self._recency.values())

    def rebuild(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Index every key of the table (after an assignment or recovery)."""
        self._recency.clear()
        self._heaps.clear()
        for key, value in items:
            try:
                when = registry_recency(peek(value)[0])
            except ValueError:  # undecodable state (msgspec's and orjson's decode errors are ValueErrors)
                when = 0
            self._recency.setdefault(self.partition_of(key), {})[key] = when
        self.stale = False
        log.info("key index rebuilt: %d keys, cap %d per partition", len(self), self.per_partition)

    def touch(self, key: bytes, when_ms: int, partition: int | None = None) -> list[bytes]:
        """Record that `key` has state last seen at `when_ms`; return the keys to evict from its partition.

        `partition`: the key's keyed-topic partition when the caller knows it (the message's), else computed.
        A partition's eviction heap exists only once the partition has reached the cap: below it (the normal
        case) the index is one dict entry per key (the heap with its stale entries cost ~350 B per key).
        """
        if partition is None:
            partition = self.partition_of(key)
        rec = self._recency.setdefault(partition, {})
        heap = self._heaps.get(partition)
        if rec.get(key) != when_ms:
            rec[key] = when_ms
            if heap is not None:
                heapq.heappush(heap, (when_ms, key))
                if len(heap) > 2 * len(rec) + 64:  # drop stale entries now and then
                    heap = self._heaps[partition] = [(t, k) for k, t in rec.items()]
                    heapq.heapify(heap)
        if len(rec) <= self.per_partition:
            return []
        if heap is None:
            heap = self._heaps[partition] = [(t, k) for k, t in rec.items()]
            heapq.heapify(heap)
        evicted: list[bytes] = []
        kept: list[tuple[int, bytes]] = []
        while len(rec) > self.per_partition and heap:
            entry = heapq.heappop(heap)
            t, k = entry
            if rec.get(k) != t:
                continue  # stale heap entry: the key was touched again since
            if k == key:
                kept.append(entry)
                continue
            del rec[k]
            evicted.append(k)
        for entry in kept:
            heapq.heappush(heap, entry)
        return evicted
