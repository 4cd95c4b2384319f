"""The pipeline's output seam, and its in-memory implementation.

Alerts and dead letters go to `OutputSink`s: objects with a lifecycle (`start`, `write(items)`, `flush`, `stop`)
that the app drives, receiving `Alert`s or `Letter`s and serialising them themselves (the Kafka sinks) or mapping
them (Alertmanager). A `SinkSet` writes each batch to any number of sinks: the required ones (the Kafka topics,
the system of record) first, then the optional ones (an HTTP receiver), whose failures are logged and never reach
the pipeline.

The keyed channel (the internal re-key topic: forwards and packed records) stays on the byte-level
`send(channel, key, value)`: it is the stream's own plumbing, acknowledged with the changelog, not an output.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

from keywatch.contract.alerts import Alert

if TYPE_CHECKING:
    from keywatch.contract.deadletter import Letter

log = logging.getLogger(__name__)

Channel = Literal["keyed", "alerts", "dlq"]
T = TypeVar("T")


class Undeliverable(Exception):
    """A message that can never be delivered (too large, refused by the broker): the sink has logged and counted
    it, and dropped it; the caller goes on without it."""


class Undelivered(Exception, Generic[T]):
    """Some items of a `write` were not delivered: `again` lists those worth writing again, `dropped` those that
    can never be delivered (logged and counted by the sink); the other items were delivered."""

    def __init__(self, again: Sequence[T], dropped: Sequence[T] = ()) -> None:
        super().__init__(f"{len(again)} item(s) to write again, {len(dropped)} dropped")
        self.again = list(again)
        self.dropped = list(dropped)


class OutputSink(ABC, Generic[T]):
    """A sink of the pipeline's output, with the lifecycle the app drives: `start`, `write`..., `flush`, `stop`.

    `write` returns once the items are delivered (a required sink) or queued (an optional one, delivering in the
    background); it raises `Undeliverable` for an item that can never be delivered. `flush` waits until what was
    written is delivered. A sink that is not `required` must never hold up the pipeline.
    """

    name: str = "sink"
    required: bool = True

    async def start(self) -> None:
        """Open connections, start background tasks."""

    @abstractmethod
    async def write(self, items: Sequence[T]) -> None:
        """Deliver (or queue) these items."""

    async def flush(self) -> None:
        """Wait until every item written so far is delivered."""

    async def stop(self) -> None:
        """Flush what can be flushed, then close."""


AlertSink = OutputSink[Alert]
LetterSink = OutputSink["Letter"]


class SinkSet(OutputSink[T]):
    """Several sinks as one: each batch goes to every required sink, then to every optional one.

    A required sink's error propagates (and the optional sinks do not get that batch: what is not on the system
    of record is not posted elsewhere); an optional sink's error is logged and swallowed.
    """

    name = "sinks"

    def __init__(self, sinks: Sequence[OutputSink[T]] = ()) -> None:
        self.sinks = list(sinks)

    @property
    def required_sinks(self) -> list[OutputSink[T]]:
        """The sinks whose failures the pipeline sees."""
        return [sink for sink in self.sinks if sink.required]

    @property
    def optional_sinks(self) -> list[OutputSink[T]]:
        """The sinks whose failures are only logged."""
        return [sink for sink in self.sinks if not sink.required]

    async def start(self) -> None:
        """Start every sink, required ones first (an optional one that fails to start is logged)."""
        for sink in self.required_sinks:
            await sink.start()
        for sink in self.optional_sinks:
            try:
                await sink.start()
            except Exception:
                log.exception("sink %s did not start", sink.name)

    async def write(self, items: Sequence[T]) -> None:
        """Write to the required sinks, then to the optional ones."""
        for sink in self.required_sinks:
            await sink.write(items)
        for sink in self.optional_sinks:
            try:
                await sink.write(items)
            except Exception:
                log.exception("sink %s failed on %d item(s)", sink.name, len(items))

    async def flush(self) -> None:
        """Flush every sink, required ones first."""
        for sink in self.required_sinks:
            await sink.flush()
        for sink in self.optional_sinks:
            try:
                await sink.flush()
            except Exception:
                log.exception("sink %s did not flush", sink.name)

    async def stop(self) -> None:
        """Stop every sink (each one even when another fails: stopping must not hide why we stop)."""
        for sink in self.required_sinks + self.optional_sinks:
            try:
                await sink.stop()
            except Exception:
                log.exception("sink %s did not stop cleanly", sink.name)


class Sink(Protocol):
    """The pipeline's outlets: the keyed channel (bytes), and the alert and dead-letter sinks."""

    @property
    def alerts(self) -> OutputSink[Alert]:
        """Where alerts go."""
        ...

    @property
    def letters(self) -> OutputSink[Letter]:
        """Where dead letters go."""
        ...

    async def send(
        self, channel: Literal["keyed"], key: bytes | None, value: bytes, *, partition: int | None = None
    ) -> None:
        """Send (or buffer) one keyed-channel message, to `partition` if given (else the key's); ordering per key
        is preserved. Raises `Undeliverable` for a message that can never be delivered."""
        ...


class KeyedSender(Protocol):
    """The byte-level keyed channel alone."""

    async def send(
        self, channel: Literal["keyed"], key: bytes | None, value: bytes, *, partition: int | None = None
    ) -> None:
        """As `Sink.send`."""
        ...


@dataclass
class Outputs:
    """A `Sink` put together from its parts: the keyed sender and the alert and dead-letter sinks (whose lifecycle
    the app drives)."""

    keyed: KeyedSender
    alerts: OutputSink[Alert]
    letters: OutputSink[Letter]

    async def send(
        self, channel: Literal["keyed"], key: bytes | None, value: bytes, *, partition: int | None = None
    ) -> None:
        """Send through the keyed sender."""
        await self.keyed.send(channel, key, value, partition=partition)


class MemoryAlertSink(OutputSink[Alert]):
    """Keeps alerts as the alert topic would: (subject, JSON) pairs in `messages`."""

    name = "memory-alerts"

    def __init__(self, messages: list[tuple[bytes | None, bytes]]) -> None:
        self.messages = messages

    async def write(self, items: Sequence[Alert]) -> None:
        """Append each alert, serialised as the Kafka alert sink does."""
        self.messages.extend((alert.subject.encode(), alert.model_dump_json().encode()) for alert in items)


class MemoryLetterSink(OutputSink["Letter"]):
    """Keeps dead letters as the DLQ would: (key, value) pairs in `messages`."""

    name = "memory-dlq"

    def __init__(self, messages: list[tuple[bytes | None, bytes]]) -> None:
        self.messages = messages

    async def write(self, items: Sequence[Letter]) -> None:
        """Append each letter's key and value."""
        self.messages.extend((letter.key, letter.value) for letter in items)


@dataclass
class MemorySink:
    """Keeps every message in lists, per channel: the whole pipeline is testable without a broker."""

    messages: dict[str, list[tuple[bytes | None, bytes]]] = field(
        default_factory=lambda: {"keyed": [], "alerts": [], "dlq": []}
    )

    def __post_init__(self) -> None:
        self.alerts = MemoryAlertSink(self.messages["alerts"])
        self.letters = MemoryLetterSink(self.messages["dlq"])

    async def send(self, channel: Channel, key: bytes | None, value: bytes, *, partition: int | None = None) -> None:
        """Append to the channel's list (the partition is not kept: a memory sink has none)."""
        self.messages[channel].append((key, value))
