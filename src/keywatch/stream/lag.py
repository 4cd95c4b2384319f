"""Measuring the worker's two consumer groups for `keywatch.progress`: per assigned partition, the group's committed
offset (its durable progress) and the partition's highwater, read fresh from the broker every time.

The highwater comes from a ListOffsets request, not from the last fetch response: a fetcher that stopped fetching
also stops updating what it last saw, which would hide exactly the stall this is for. Every request goes through
one admin client of its own and none of them names a topic in a metadata request (which would create a missing
input topic where auto.create.topics.enable is on): OffsetFetch for the committed offsets, all-topic metadata for
the leaders, ListOffsets to them (`kafka_internals.list_offsets`). The consumers are only asked what they have
assigned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from keywatch.config import Settings
from keywatch.progress import TopicPartitionKey
from keywatch.security import aiokafka_kwargs
from keywatch.stream.kafka_internals import list_offsets

log = logging.getLogger(__name__)

MEASURE_TIMEOUT_S = 10.0  # a broker that does not answer makes the offsets unknown, never a stall

Offsets = dict[TopicPartitionKey, tuple[int, int]]


class GroupOffsets:
    """Committed offsets and highwaters through one admin client, started on first use and again after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin: AIOKafkaAdminClient | None = None

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._settings.bootstrap_list,
                client_id=f"{self._settings.app_id}-lag",
                request_timeout_ms=int(MEASURE_TIMEOUT_S * 1000),
                **aiokafka_kwargs(self._settings),
            )
            await admin.start()
            self._admin = admin
        return self._admin

    async def read(self, group: str, partitions: list[TopicPartition]) -> Offsets:
        """(position, highwater) of each partition for `group`; raises when the broker cannot tell."""
        try:
            admin = await self._client()
            got = await admin.list_consumer_group_offsets(group, partitions=partitions)
            committed = {tp: meta.offset for tp, meta in got.items() if meta is not None and meta.offset >= 0}
            highwaters = await list_offsets(admin, partitions, latest=True)
            fresh = [tp for tp in partitions if tp not in committed]  # only these start at the earliest offset
            earliest = await list_offsets(admin, fresh, latest=False) if fresh else {}
        except Exception:
            await self.close()
            raise
        return positions(partitions, committed, earliest, highwaters)

    async def topics(self) -> set[str]:
        """Every topic of the cluster (all-topic metadata: never creates one); raises when the broker cannot tell."""
        try:
            return set(await (await self._client()).list_topics())
        except Exception:
            await self.close()
            raise

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


async def measure(group: str, partitions: Iterable[Any], probe: GroupOffsets) -> Offsets | None:
    """The offsets of `group` on `partitions` (faust or aiokafka partitions), or None when they cannot be
    measured now (a request failed or took longer than MEASURE_TIMEOUT_S)."""
    tps = sorted(TopicPartition(tp.topic, tp.partition) for tp in partitions)
    if not tps:
        return {}
    try:
        return await asyncio.wait_for(probe.read(group, tps), MEASURE_TIMEOUT_S)
    except Exception as exc:  # unknown is not stalled: the `connected` check covers a broker that is away
        log.debug("cannot measure the offsets of %s now: %s: %s", group, type(exc).__name__, exc)
        return None
