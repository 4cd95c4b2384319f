"""The one narrow output interface of the pipeline, and its in-memory implementation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Channel = Literal["keyed", "alerts", "dlq"]


class Undeliverable(Exception):
    """A message that can never be delivered (too large, refused by the broker): the sink has logged and counted
    it, and dropped it; the caller goes on without it."""


class Sink(Protocol):
    """Sends one message to a channel: the keyed internal topic, the alert topic or the dead-letter topic."""

    async def send(self, channel: Channel, key: bytes | None, value: bytes) -> None:
        """Send (or buffer) one message; ordering per (channel, key) is preserved. Raises `Undeliverable` for a
        message that can never be delivered."""
        ...


@dataclass
class MemorySink:
    """Keeps every message in lists: the whole pipeline is testable without a broker."""

    messages: dict[str, list[tuple[bytes | None, bytes]]] = field(
        default_factory=lambda: {"keyed": [], "alerts": [], "dlq": []}
    )

    async def send(self, channel: Channel, key: bytes | None, value: bytes) -> None:
        """Append to the channel's list."""
        self.messages[channel].append((key, value))
