"""FaustSink's handling of failed sends, with stand-ins for faust's topics (their `send` returns the producer's
future, as faust 0.15.3 does without attachments): retriable failures are sent again, the others dropped once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import errors
from faust.exceptions import ProducerSendError

from keywatch.backoff import Backoff
from keywatch.config import Settings
from keywatch.metrics import Metrics
from keywatch.parsing import Rejection
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.runtime import make_engine
from keywatch.sinks.base import Outputs, Undeliverable
from keywatch.stream.app import FaustSink
from keywatch.stream.kafka_sinks import TopicAlertSink, TopicLetterSink


class ScriptedTopic:
    """A topic whose sends fail as scripted (an exception raised at once, a failed future, or None: delivered)."""

    def __init__(self, name: str, script: Iterator[tuple[str, BaseException] | None]) -> None:
        self.name = name
        self.script = script
        self.delivered: list[tuple[bytes | None, bytes]] = []
        self.partitions: list[int | None] = []  # of each delivered message

    def get_topic_name(self) -> str:
        return self.name

    async def send(
        self, *, key: bytes | None, value: bytes, headers: Any = None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        step = next(self.script, None)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if step is not None and step[0] == "raise":
            raise step[1]
        if step is not None:
            future.set_exception(step[1])
        else:
            self.delivered.append((key, value))
            self.partitions.append(partition)
            future.set_result(None)
        return future


def _failures(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["channel"], s.labels["reason"], s.labels["action"]): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "keywatch_send_failures_total"
    }


def _sink(metrics: Metrics, **scripts: list[tuple[str, BaseException] | None]) -> tuple[FaustSink, dict[str, Any]]:
    topics = {name: ScriptedTopic(name, iter(scripts.get(name, []))) for name in ("keyed", "alerts", "dlq")}
    return FaustSink(topics["keyed"], topics["alerts"], topics["dlq"], metrics, Backoff(0.0, 0.0)), topics


async def test_an_alert_whose_acknowledgement_times_out_is_sent_again() -> None:
    """A retriable failure of an alert's acknowledgement: settle() sends it again and it is delivered once."""
    metrics = Metrics()
    sink, topics = _sink(metrics, alerts=[("fail", errors.KafkaTimeoutError())])
    await sink.send("alerts", b"acme/k1", b"{}")
    await sink.settle()
    assert topics["alerts"].delivered == [(b"acme/k1", b"{}")]
    assert _failures(metrics) == {("alerts", "timeout", "retried"): 1}


async def test_a_keyed_message_sent_again_goes_to_the_same_partition() -> None:
    """A packed hand-off message (no key, an explicit partition) whose acknowledgement failed is sent again to the
    partition it was meant for: the one its subjects' states live in."""
    metrics = Metrics()
    sink, topics = _sink(metrics, keyed=[("fail", errors.KafkaTimeoutError())])
    await sink.send("keyed", None, b"P[]", partition=3)
    await sink.send("keyed", b"acme/", b"F{}")
    await sink.settle()
    assert topics["keyed"].delivered == [(b"acme/", b"F{}"), (None, b"P[]")]
    assert topics["keyed"].partitions == [None, 3]


async def test_a_message_too_large_for_the_producer_is_dropped_at_once() -> None:
    """faust's ProducerSendError around MessageSizeTooLarge: Undeliverable at once, counted, never re-sent."""
    metrics = Metrics()
    error = ProducerSendError("Error while sending")
    error.__cause__ = errors.MessageSizeTooLargeError()
    sink, topics = _sink(metrics, keyed=[("raise", error)])
    with pytest.raises(Undeliverable):
        await sink.send("keyed", b"acme/k1", b"F{}")
    await sink.settle()
    assert topics["keyed"].delivered == []
    assert _failures(metrics) == {("keyed", "too_large", "dropped"): 1}


async def test_a_refused_alert_is_dropped_and_the_others_are_delivered() -> None:
    """An alert the broker refuses for good is dropped at settle(); the alerts around it are delivered."""
    metrics = Metrics()
    sink, topics = _sink(metrics, alerts=[None, ("fail", errors.TopicAuthorizationFailedError("alerts")), None])
    for i in range(3):
        await sink.send("alerts", f"acme/k{i}".encode(), b"{}")
    await sink.settle()
    assert [k for k, _ in topics["alerts"].delivered] == [b"acme/k0", b"acme/k2"]
    assert _failures(metrics) == {("alerts", "authorization", "dropped"): 1}


async def test_a_dead_letter_counts_only_once_acknowledged() -> None:
    """Processor.dead_letter through the dead-letter sink on FaustSink: a letter refused for good is not counted
    as sent; one acknowledged after a retry is counted once."""
    metrics = Metrics()
    sink, topics = _sink(
        metrics,
        dlq=[("fail", errors.TopicAuthorizationFailedError("dlq")), ("fail", errors.NotLeaderForPartitionError())],
    )
    processor = Processor(
        make_engine(Settings()),
        Outputs(sink, TopicAlertSink(sink), TopicLetterSink(sink)),
        Topics("requests", "lifecycle"),
        metrics=metrics,
        clock=lambda: datetime(2026, 3, 1, tzinfo=UTC),
    )
    rejection = Rejection("json", "record is not valid JSON")
    await processor.dead_letter("requests", 0, 1, None, b"{", rejection)
    assert metrics.registry.get_sample_value("keywatch_dead_letters_total", {"reason": "json"}) is None
    await processor.dead_letter("requests", 0, 2, None, b"{", rejection)
    assert metrics.registry.get_sample_value("keywatch_dead_letters_total", {"reason": "json"}) == 1
    assert len(topics["dlq"].delivered) == 1
    assert _failures(metrics) == {
        ("dlq", "authorization", "dropped"): 1,
        ("dlq", "unavailable", "retried"): 1,
    }
