"""Alerts read off the real broker the way a downstream team reads them: with the official CloudEvents SDK's
Kafka binding, validated against the CloudEvents 1.0 JSON schema and keywatch's own strict alert schema."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka, from_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1 import kafka as legacy_kafka

from tests.factories import as_bytes, lifecycle_dict, request_dict
from tests.integration.kafka_helpers import WorkerProcess, produce
from tests.schema_check import cloudevents_validator, errors, keywatch_validator


async def _records(bootstrap: str, topic: str, count: int, deadline_s: float = 60.0) -> list[KafkaMessage]:
    """The first `count` records of `topic`, headers included, as the SDK's KafkaMessage."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[KafkaMessage] = []
    try:
        end = time.monotonic() + deadline_s
        while len(got) < count and time.monotonic() < end:
            for messages in (await consumer.getmany(timeout_ms=250)).values():
                got.extend(KafkaMessage(headers=dict(m.headers), key=m.key, value=m.value) for m in messages)
        return got
    finally:
        await consumer.stop()


async def test_alerts_are_structured_cloudevents_the_sdk_reads(worker_factory: Callable[..., WorkerProcess]) -> None:
    worker = worker_factory()
    worker.start()
    await worker.wait_ready()
    events = [
        lifecycle_dict(key_id="k_ce", ts="2026-01-05T09:00:00Z"),
        lifecycle_dict(type="apiKey.revoked", key_id="k_ce", ts="2026-01-05T10:00:00Z"),
    ]
    await produce(worker.bootstrap, worker.topics["lifecycle"], [(None, as_bytes(e)) for e in events])
    # a request with the revoked key: a detection alert, not only lifecycle ones
    used = request_dict(key_id="k_ce", ts="2026-01-05T10:05:00Z")
    await produce(worker.bootstrap, worker.topics["requests"], [(None, as_bytes(used))])
    records = await _records(worker.bootstrap, worker.topics["alerts"], 3)
    assert len(records) == 3, worker.log_text()[-3000:]
    types = set()
    for record in records:
        # the binding: a content-type of the CloudEvents JSON format means structured mode
        assert record.headers["content-type"].startswith(b"application/cloudevents+json"), record.headers
        assert not any(name.startswith("ce_") for name in record.headers)
        document = orjson.loads(record.value)
        event = from_kafka(record, JSONFormat())  # the SDK picks the mode itself
        assert event.get_id() == document["id"]
        assert event.get_type() == document["type"]
        assert event.get_source() == document["source"]
        assert event.get_subject() == document["subject"] == record.key.decode()
        assert event.get_data() == document["data"]
        assert from_structured(record, JSONFormat()).get_id() == document["id"]
        legacy = legacy_kafka.from_structured(
            legacy_kafka.KafkaMessage(headers=record.headers, key=record.key, value=record.value)
        )
        assert legacy["id"] == document["id"]
        assert errors(cloudevents_validator(), document) == []
        assert errors(keywatch_validator("alert"), document) == []
        types.add(document["type"])
    assert types == {"apiKey.created", "apiKey.revoked", "apiKey.usedAfterRevoke"}
