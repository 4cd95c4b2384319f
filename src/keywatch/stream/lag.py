"""Measuring the worker's two consumer groups for `keywatch.progress`: per assigned partition, the group's committed
offset (its durable progress) and the partition's highwater, read fresh from the broker every time.

The highwater comes from a ListOffsets request, not from the last fetch response: a fetcher that stopped fetching
also stops updating what it last saw, which would hide exactly the stall this is for. Only public client calls
are used: the ingest consumer's `assignment()`, `end_offsets()` and `beginning_offsets()`; faust's
`Consumer.assignment()`, `highwaters()` and `earliest_offsets()`; the admin client's
`list_consumer_group_offsets()` (an OffsetFetch, which names no topic in a metadata request, so it never
auto-creates one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from keywatch.config import Settings
from keywatch.progress import TopicPartitionKey
from keywatch.security import aiokafka_kwargs

log = logging.getLogger(__name__)

MEASURE_TIMEOUT_S = 10.0  # a broker that does not answer makes the offsets unknown, never a stall

Offsets = dict[TopicPartitionKey, tuple[int, int]]


class GroupOffsets:
    """Committed offsets of consumer groups through one admin client, started on first use and again after a
    failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin: AIOKafkaAdminClient | None = None

    async def committed(self, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The committed offset of each partition that has one (a partition never committed is left out)."""
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._settings.bootstrap_list,
                request_timeout_ms=int(MEASURE_TIMEOUT_S * 1000),
                **aiokafka_kwargs(self._settings),
            )
            await admin.start()
            self._admin = admin
        try:
            got = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        except Exception:
            await self.close()
            raise
        return {tp: meta.offset for tp, meta in got.items() if meta is not None and meta.offset >= 0}

    async def close(self) -> None:
        """Stop the admin client (it is started again when next needed)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except Exception:  # closing a client of a dead connection must not hide the next measurement
                log.debug("closing the lag admin client failed", exc_info=True)


def positions(
    partitions: Iterable[TopicPartition],
    committed: Mapping[TopicPartition, int],
    earliest: Mapping[TopicPartition, int],
    highwaters: Mapping[TopicPartition, int],
) -> Offsets:
    """(position, highwater) per partition: the committed offset, or the earliest (where a group that never
    committed starts reading, auto_offset_reset=earliest)."""
    out: Offsets = {}
    for tp in partitions:
        position = committed[tp] if tp in committed else earliest[tp]
        out[(tp.topic, tp.partition)] = (position, int(highwaters[tp]))
    return out


async def measure(
    group: str,
    partitions: Iterable[Any],
    ends: Callable[[list[TopicPartition]], Awaitable[Mapping[Any, int]]],
    starts: Callable[[list[TopicPartition]], Awaitable[Mapping[Any, int]]],
    probe: GroupOffsets,
) -> Offsets | None:
    """The offsets of `group` on `partitions` (faust or aiokafka partitions), or None when they cannot be
    measured now (a request failed or took longer than MEASURE_TIMEOUT_S)."""
    tps = sorted(TopicPartition(tp.topic, tp.partition) for tp in partitions)
    if not tps:
        return {}

    async def read() -> Offsets:
        committed = await probe.committed(group, tps)
        highwaters = {TopicPartition(tp.topic, tp.partition): int(o) for tp, o in (await ends(tps)).items()}
        fresh = [tp for tp in tps if tp not in committed]  # only these start at the earliest offset
        earliest = (
            {TopicPartition(tp.topic, tp.partition): int(o) for tp, o in (await starts(fresh)).items()} if fresh else {}
        )
        return positions(tps, committed, earliest, highwaters)

    try:
        return await asyncio.wait_for(read(), MEASURE_TIMEOUT_S)
    except Exception as exc:  # unknown is not stalled: the `connected` check covers a broker that is away
        log.debug("cannot measure the offsets of %s now: %s: %s", group, type(exc).__name__, exc)
        return None
