"""The Kafka sinks of the output seam (stream/kafka_sinks.py), with stand-ins for the producers: alerts keep their
bytes on the topic, and a dead letter is reported delivered, to send again or dropped as the broker answered."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import errors

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.deadletter import Letter
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.runtime import make_engine
from keywatch.sinks.base import Channel, MemorySink, OutputSink, Undeliverable, Undelivered
from keywatch.stream.ingest import IngestStage
from keywatch.stream.kafka_sinks import Headers, ProducerLetterSink, TopicAlertSink


class Transport:
    """Records what is sent; refuses the values listed in `refuse` for good."""

    def __init__(self, refuse: tuple[bytes, ...] = ()) -> None:
        self.sent: list[tuple[Channel, bytes | None, bytes]] = []
        self.headers: list[Headers | None] = []
        self.refuse = refuse
        self.settled = 0

    async def send(self, channel: Channel, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        if key in self.refuse:
            raise Undeliverable(channel)
        self.sent.append((channel, key, value))
        self.headers.append(headers)

    async def settle(self) -> None:
        self.settled += 1


def _alert(key_id: str) -> Alert:
    return Alert.build(
        type="apiKey.usedFromNewIp",
        id_parts=("x",),
        source="/keywatch/test",
        time=datetime(2026, 3, 1, tzinfo=UTC),
        tenant="acme",
        key_id=key_id,
        env="live",
        severity="high",
        summary="s",
        evidence={},
    )


async def test_the_alert_topic_sink_writes_each_alert_as_its_json_keyed_by_subject() -> None:
    """Each alert is the bytes the alert topic always had (its JSON, keyed by subject); one Kafka refuses is
    reported after the others are written; flush settles the producer."""
    transport = Transport(refuse=(b"acme/k2",))
    sink = TopicAlertSink(transport)
    alerts = [_alert("k1"), _alert("k2"), _alert("k3")]
    with pytest.raises(Undeliverable):
        await sink.write(alerts)
    await sink.flush()
    assert transport.sent == [
        ("alerts", a.subject.encode(), a.model_dump_json().encode()) for a in (alerts[0], alerts[2])
    ]
    # structured content mode of the CloudEvents Kafka binding
    assert transport.headers == [[("content-type", b"application/cloudevents+json; charset=UTF-8")]] * 2
    assert transport.settled == 1


class Producer:
    """An aiokafka producer stand-in: a letter's acknowledgement fails as scripted by its value."""

    def __init__(self, script: dict[bytes, BaseException]) -> None:
        self.script = script
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, *, value: bytes, key: bytes | None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if value in self.script:
            future.set_exception(self.script[value])
        else:
            self.sent.append((topic, key, value))
            future.set_result(None)
        return future


def _letter(value: bytes, offset: int) -> Letter:
    return Letter(b"k", value, "json", ("requests", 0), offset)


async def test_ingest_letters_report_what_to_send_again_and_what_was_dropped() -> None:
    """A retriable failure is listed in `again`, a permanent one in `dropped` (both counted by reason); the
    acknowledged letter is neither, and keeps its key and value."""
    metrics = Metrics()
    producer = Producer({b"retry": errors.KafkaTimeoutError(), b"never": errors.MessageSizeTooLargeError()})
    sink = ProducerLetterSink(lambda: producer, "dlq", metrics)
    ok, retry, never = _letter(b"ok", 1), _letter(b"retry", 2), _letter(b"never", 3)
    with pytest.raises(Undelivered) as caught:
        await sink.write([ok, retry, never])
    assert (caught.value.again, caught.value.dropped) == ([retry], [never])
    assert producer.sent == [("dlq", b"k", b"ok")]
    labels = [("dlq", "timeout", "retried"), ("dlq", "too_large", "dropped")]
    for channel, reason, action in labels:
        sample = metrics.registry.get_sample_value(
            "keywatch_send_failures_total", {"channel": channel, "reason": reason, "action": action}
        )
        assert sample == 1


async def test_ingest_letters_all_acknowledged_return_quietly() -> None:
    """Every letter acknowledged: write returns and nothing is counted as a failure."""
    metrics = Metrics()
    producer = Producer({})
    await ProducerLetterSink(lambda: producer, "dlq", metrics).write([_letter(b"a", 1), _letter(b"b", 2)])
    assert [value for _, _, value in producer.sent] == [b"a", b"b"]
    assert not [s for f in metrics.registry.collect() for s in f.samples if s.name == "keywatch_send_failures_total"]


class Refusing(OutputSink[Letter]):
    """A dead-letter sink that reports the letters at given offsets as to send again or dropped."""

    def __init__(self, again: set[int], dropped: set[int]) -> None:
        self.again, self.dropped = again, dropped

    async def write(self, items: Sequence[Letter]) -> None:
        again = [letter for letter in items if letter.offset in self.again]
        dropped = [letter for letter in items if letter.offset in self.dropped]
        if again or dropped:
            raise Undelivered(again, dropped)


async def test_ingest_counts_only_the_letters_its_sink_delivered() -> None:
    """Ingest writes a batch's letters through its dead-letter sink: delivered ones are counted in
    keywatch_dead_letters_total, the ones to send again are handed back (their input is read again)."""
    settings = Settings()
    metrics = Metrics()
    processor = Processor(make_engine(settings), MemorySink(), Topics("requests", "lifecycle"), metrics=metrics)
    stage = IngestStage(settings, processor, metrics, "keyed", letters=Refusing(again={2}, dropped={3}))
    letters = [_letter(b"a", 1), _letter(b"b", 2), _letter(b"c", 3), _letter(b"d", 4)]
    assert await stage._write_letters(letters) == [letters[1]]
    assert metrics.registry.get_sample_value("keywatch_dead_letters_total", {"reason": "json"}) == 2
