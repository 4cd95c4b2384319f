"""The Kafka sinks of the output seam (`sinks/base.py`): the alert topic and the dead-letter topic.

They serialise what they are given themselves: an alert is its CloudEvent JSON keyed by its subject (structured
content mode of the CloudEvents Kafka binding: header `content-type: application/cloudevents+json`), a dead
letter its key and value as `Processor` made them (bounded, redacted). The detect side sends through faust's
producer (`FaustSink`, which settles acknowledgements and backs off on retriable failures); ingest's dead letters
go through ingest's own aiokafka producer, beside its keyed messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from keywatch.contract.alerts import Alert
from keywatch.contract.deadletter import Letter
from keywatch.metrics import Metrics
from keywatch.sinks.base import Channel, OutputSink, Undeliverable, Undelivered
from keywatch.stream.delivery import classify

log = logging.getLogger(__name__)


# Kafka record headers, as aiokafka and faust take them
Headers = list[tuple[str, bytes]]

# The CloudEvents Kafka protocol binding, structured content mode: the whole event is the record's value, and the
# content-type header names the event format. A record without it would be read as binary mode (attributes from
# ce_* headers), which keywatch does not write.
CLOUDEVENTS_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"
ALERT_HEADERS: Headers = [("content-type", CLOUDEVENTS_CONTENT_TYPE)]


class Transport(Protocol):
    """A byte-level sender with acknowledgements (`FaustSink`)."""

    async def send(self, channel: Channel, key: bytes | None, value: bytes, headers: Headers | None = None) -> None:
        """Send (or buffer) one message; raises `Undeliverable` for one that can never be sent."""
        ...

    async def settle(self) -> None:
        """Wait for the acknowledgement of every message buffered so far."""
        ...


def alert_record(alert: Alert) -> tuple[bytes, bytes]:
    """The Kafka key and value of an alert on the alert topic (sent with `ALERT_HEADERS`)."""
    return alert.subject.encode(), alert.model_dump_json().encode()


class TopicAlertSink(OutputSink[Alert]):
    """The alert topic, the system of record: required; `flush` waits for the broker's acknowledgements."""

    name = "kafka-alerts"

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def write(self, items: Sequence[Alert]) -> None:
        """Buffer every alert on the topic; `Undeliverable` (after the others) when one can never be sent."""
        undeliverable: Undeliverable | None = None
        for alert in items:
            key, value = alert_record(alert)
            try:
                await self._transport.send("alerts", key, value, ALERT_HEADERS)
            except Undeliverable as exc:
                undeliverable = exc
        if undeliverable is not None:
            raise undeliverable

    async def flush(self) -> None:
        """Wait until the broker has every alert written (faust's producer: shared with forwards)."""
        await self._transport.settle()

    async def stop(self) -> None:
        """Nothing to do: the detect agent flushes after every batch of keyed messages, and faust flushes (then
        stops) its producer at shutdown; waiting here could wait forever on an unreachable broker."""


class TopicLetterSink(OutputSink[Letter]):
    """The dead-letter topic through faust's producer: `write` returns once the broker has each letter."""

    name = "kafka-dlq"

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def write(self, items: Sequence[Letter]) -> None:
        """Send each letter and wait for its acknowledgement; `Undeliverable` (after the others) when one can
        never be sent."""
        undeliverable: Undeliverable | None = None
        for letter in items:
            try:
                await self._transport.send("dlq", letter.key, letter.value)
            except Undeliverable as exc:
                undeliverable = exc
        if undeliverable is not None:
            raise undeliverable


class ProducerLetterSink(OutputSink[Letter]):
    """The dead-letter topic through an aiokafka producer that someone else starts and stops (ingest's own).

    `write` sends every letter, waits for every acknowledgement and raises `Undelivered` naming the letters worth
    sending again (`again`) and those dropped for good (`dropped`: logged and counted in
    keywatch_send_failures_total{channel="dlq"}); the others are acknowledged.
    """

    name = "kafka-dlq-ingest"

    def __init__(self, producer: Callable[[], Any], topic: str, metrics: Metrics) -> None:
        self._producer = producer
        self.topic = topic
        self._metrics = metrics

    async def write(self, items: Sequence[Letter]) -> None:
        """Send and await; see the class."""
        if not items:
            return
        producer = self._producer()
        pending: list[tuple[Letter, asyncio.Future[Any]]] = []
        failed: list[tuple[Letter, BaseException]] = []
        for letter in items:
            try:
                future = await producer.send(self.topic, value=letter.value, key=letter.key)
            except Exception as exc:  # raised before the broker saw it (e.g. larger than max_request_size)
                failed.append((letter, exc))
            else:
                pending.append((letter, future))
        results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        failed.extend(
            (letter, result)
            for (letter, _), result in zip(pending, results, strict=True)
            if isinstance(result, BaseException)
        )
        if not failed:
            return
        again: list[Letter] = []
        dropped: list[Letter] = []
        for letter, error in failed:
            if isinstance(error, asyncio.CancelledError):
                raise error
            verdict = classify(error)
            self._metrics.send_failures.labels("dlq", verdict.reason, "retried" if verdict.retry else "dropped").inc()
            log.log(
                logging.WARNING if verdict.retry else logging.ERROR,
                "ingest: a %d-byte dlq message for %s (input %s[%d]@%d) was not sent: %s: %s (%s)",
                len(letter.value),
                self.topic,
                letter.source[0],
                letter.source[1],
                letter.offset,
                type(error).__name__,
                error,
                "will retry" if verdict.retry else "dropped: it can never be sent",
            )
            (again if verdict.retry else dropped).append(letter)
        raise Undelivered(again, dropped)
