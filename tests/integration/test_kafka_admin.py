"""keywatch's own topic chores against the real broker."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaClient

from keywatch.kafka_admin import ensure_topics


async def test_ensure_topics_returns_once_every_partition_has_a_leader(kafka_bootstrap: str) -> None:
    """A group leader that looks right after `ensure_topics` sees every partition of the new topics (the keyed
    topic was once assigned to nobody because faust's first metadata came before the topic's)."""
    names = [f"admin-{uuid.uuid4().hex[:8]}-{n}" for n in ("keyed", "alerts")]
    created = await ensure_topics([kafka_bootstrap], names, partitions=3)
    assert created == names
    client = AIOKafkaClient(bootstrap_servers=kafka_bootstrap)
    await client.bootstrap()
    try:
        metadata = await client.fetch_all_metadata()  # one request, as a group leader makes before it assigns
        for name in names:
            assert metadata.partitions_for_topic(name) == {0, 1, 2}
            assert metadata.available_partitions_for_topic(name) == {0, 1, 2}
    finally:
        await client.close()
    assert await ensure_topics([kafka_bootstrap], [*names, names[0]], partitions=3) == []
