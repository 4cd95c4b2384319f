"""TableView's changelog writes (`_send_batches`) against the real broker: split into batches, in order, with
tombstones, and the offset of the last record returned."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from keywatch.kafka_admin import ensure_topics
from keywatch.stream.app import _send_batches
from tests.integration.kafka_helpers import read_all


async def test_writes_span_several_batches_in_order_and_the_last_offset_is_returned(kafka_bootstrap: str) -> None:
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    await ensure_topics([kafka_bootstrap], [topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_batch_size=2048)
    await producer.start()
    try:
        writes: dict[bytes, bytes | None] = {f"acme/k{i}".encode(): bytes([65 + i % 26]) * 300 for i in range(20)}
        writes[b"acme/k3"] = None  # a deletion: a tombstone
        last = await _send_batches(producer, topic, 1, writes)  # 20 x ~300 B: several 2 KiB batches
        assert last == 19
        assert await _send_batches(producer, topic, 1, {b"acme/k0": b"again"}) == 20
        # larger than a batch: aiokafka takes it alone in a batch of its own
        big = {b"acme/a": b"a" * 100, b"acme/big": b"x" * 4096, b"acme/b": b"b" * 100}
        assert await _send_batches(producer, topic, 1, big) == 23
    finally:
        await producer.stop()
    records = await read_all(kafka_bootstrap, topic)
    assert records == [*writes.items(), (b"acme/k0", b"again"), *big.items()]  # all in partition 1, in order
