"""The batched ingest stage against the real broker: where it starts reading after an upgrade."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.factories import as_bytes, lifecycle_dict
from tests.integration.kafka_helpers import WorkerProcess, collect, produce, wait_caught_up


async def test_ingest_starts_where_the_faust_ingest_agent_left_off(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """Upgrading from the faust ingest agent (group `<app_id>` committed the input): the ingest group starts at
    those offsets, not at the beginning of the input's retention, so no input is applied to the state twice."""
    worker = worker_factory(metrics_port=0, partitions=1)
    topic = worker.topics["lifecycle"]
    admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    events = [lifecycle_dict(key_id=f"k_up{i}", ts=f"2026-01-05T09:0{i}:00Z") for i in range(10)]
    await produce(worker.bootstrap, topic, [(None, as_bytes(e)) for e in events])
    # what the old worker's ingest agent had committed: the first 6 records are processed
    old = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap, group_id=worker.app_id, enable_auto_commit=False)
    await old.start()
    try:
        old.assign([TopicPartition(topic, 0)])
        await old.commit({TopicPartition(topic, 0): 6})
    finally:
        await old.stop()

    worker.start()
    await worker.wait_ready()
    await wait_caught_up(worker.bootstrap, f"{worker.app_id}-ingest", topic)
    await wait_caught_up(worker.bootstrap, worker.app_id, worker.topics["keyed"])
    alerts = await collect(worker.bootstrap, worker.topics["alerts"], until=lambda m: len(m) > 4, deadline_s=3)
    assert sorted(orjson.loads(v)["data"]["key_id"] for _, v in alerts) == [f"k_up{i}" for i in range(6, 10)]
    assert "starting at offset 6 (faust group" in worker.log_text()
