"""Detect: keyed messages run through the engine against each key's state; alerts and forwards out to a sink.

`DetectStep.detect_batch` is the one implementation: records in order, each key's state decoded once (on its
first record) and written back once, after the last (coalesced: one changelog record per key per message),
then the partition's due ticks (pipeline/ticks.py). `detect_message` feeds it a keyed message as the worker
receives it (packed or single); `detect` is the one-record form (`R`, `L` or `F`), a call of `detect_batch`
with one record. The key cap (pipeline/keycap.py) evicts the keys least recently seen as states are written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, TypeVar

import orjson

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import Engine, Forward, Outcome, ts_ms
from keywatch.core.state import KeyState
from keywatch.metrics import Metrics
from keywatch.parsing import Rejection
from keywatch.pipeline.ingest import internal
from keywatch.pipeline.keycap import KeyCap, registry_recency
from keywatch.pipeline.state_store import load, save
from keywatch.pipeline.ticks import TickIndex
from keywatch.pipeline.wire import (
    TAG_FORWARD,
    TAG_LIFECYCLE,
    TAG_PACKED,
    TAG_REQUEST,
    expand,
    forward_message,
    read_forward,
    unpack,
)
from keywatch.sinks.base import Sink, Undeliverable

log = logging.getLogger(__name__)

Input = RequestRecord | LifecycleEvent | Forward  # what detect hands the engine
_Entry = TypeVar("_Entry")
DeadLetter = Callable[[str, int, int, bytes | None, bytes | None, Rejection], Awaitable[None]]
"""Sends one record's dead letter: (topic, partition, offset, key, value, rejection), as `IngestStep.dead_letter`."""


class DetectStep:
    """Runs keyed messages through the engine against a state mapping; emits to a sink."""

    def __init__(
        self,
        engine: Engine,
        sink: Sink,
        dead_letter: DeadLetter,
        *,
        metrics: Metrics | None = None,
        key_cap: KeyCap | None = None,
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.dead_letter = dead_letter
        self.metrics = metrics or Metrics()
        self.key_cap = key_cap
        self.ticks = TickIndex()

    async def detect(
        self, key: bytes, value: bytes, store: MutableMapping[bytes, bytes], partition: int | None = None
    ) -> Outcome | None:
        """Process one single-record keyed message (R, L, F) against the key's state in `store`; emit alerts and
        forwards. `partition`: the keyed-topic partition it came from (computed from the key when None; without
        it no ticks run). A failure raises: the caller dead-letters the message."""
        tag, payload = value[:1], value[1:]
        item: Input
        if tag == TAG_REQUEST:
            item = RequestRecord.model_validate_json(payload)
            event_ms = ts_ms(item.ts)
        elif tag == TAG_LIFECYCLE:
            item = LifecycleEvent.model_validate_json(payload)
            event_ms = ts_ms(item.ts)
        elif tag == TAG_FORWARD:
            item = read_forward(payload)
            event_ms = item.ts_ms
        else:
            log.error("keyed message with unknown tag %r under key %r: skipped", tag, key)
            return None
        outcomes = await self.detect_batch([item], lambda one: (key, one), store, partition, event_ms)
        return outcomes[0]

    async def detect_message(
        self,
        key: bytes | None,
        value: bytes,
        store: MutableMapping[bytes, bytes],
        partition: int,
        offset: int = -1,
        topic: str = "keyed",
    ) -> int:
        """Process one keyed message, packed or single; return the number of records it carried.

        Every key of a packed message hashes to `partition`, the partition the table writes go to. A record of a
        packed message that fails costs that record only: it is dead-lettered (its compact entry, under its
        subject) and its key's state is rebuilt from the message's records before it.
        """
        if value[:1] != TAG_PACKED:
            if key is None:
                log.error("keyed message without a key at %s[%d]@%d: skipped", topic, partition, offset)
                return 0
            await self.detect(key, value, store, partition)
            return 1
        entries = unpack(value)
        newest = max((entry[1] for entry in entries if isinstance(entry, list) and len(entry) > 1), default=None)

        def read(entry: Any) -> tuple[bytes, Input]:
            record = expand(entry)
            return record.subject.encode(), record

        async def failed(entry: Any, subject: bytes, exc: Exception) -> None:
            log.error("detect failed on a record of %s[%d]@%d", topic, partition, offset, exc_info=exc)
            await self.dead_letter(topic, partition, offset, subject or key, orjson.dumps(entry), internal(exc))

        await self.detect_batch(entries, read, store, partition, newest, failed)
        return len(entries)

    async def detect_batch(
        self,
        entries: Sequence[_Entry],
        read: Callable[[_Entry], tuple[bytes, Input]],
        store: MutableMapping[bytes, bytes],
        partition: int | None,
        newest_ms: int | None,
        failed: Callable[[_Entry, bytes, Exception], Awaitable[None]] | None = None,
    ) -> list[Outcome]:
        """Process records in order against their keys' states in `store`; return their outcomes.

        `read` gives an entry's key and record (an entry that fails there fails like any other); `newest_ms` is
        the newest event time of the entries, to move the partition's watermark to. With `failed`, a record
        that fails is handed to it and costs that record only (its key's state is restored to what it was
        before it); without, the failure raises and no state is written.
        """
        if self.key_cap is not None and self.key_cap.stale:
            self.key_cap.rebuild(store.items())
            self.ticks.rebuild(store.items(), self.key_cap.partition_of)
        states: dict[bytes, KeyState] = {}  # decoded in this call, written back at its end
        done: dict[bytes, list[Input]] = {}
        outcomes: list[Outcome] = []
        for entry in entries:
            subject = b""
            try:
                subject, item = read(entry)
                state = states.get(subject)
                if state is None:
                    state = load(store, subject)
                outcome = self._apply(state, item)
                states[subject] = outcome.state
                done.setdefault(subject, []).append(item)
                for evicted in self._touch(subject, outcome.state, partition):
                    states.pop(evicted, None)
                    done.pop(evicted, None)
                    store.pop(evicted, None)
                await self._emit(outcome)
                outcomes.append(outcome)
            except Exception as exc:  # a bug must cost one record, never the message
                if failed is None:
                    raise
                if subject:
                    self._restore(subject, states, done, store)
                await failed(entry, subject, exc)
        for subject, state in states.items():
            save(store, subject, state)
        if partition is not None:
            await self.run_ticks(store, partition, states.items(), newest_ms)
        return outcomes

    async def run_ticks(
        self,
        store: MutableMapping[bytes, bytes],
        partition: int,
        written: Iterable[tuple[bytes, KeyState]],
        newest_ms: int | None,
    ) -> None:
        """Index the ticks of the states just written, move the partition's watermark to `newest_ms` (an event
        time seen), and run the ticks that are due (pipeline/ticks.py)."""
        ticks = self.ticks
        if not ticks.knows(partition) and self.key_cap is not None:
            # Without the key cap the partition count is unknown here: the index learns keys as they are written.
            ticks.index_partition(partition, store.items(), self.key_cap.partition_of)
        for key, state in written:
            if state.ticks:
                ticks.note(partition, key, state.next_tick())
        if newest_ms is None:
            return
        watermark = ticks.advance(partition, self.engine.watermark(newest_ms))
        for key in ticks.due(partition):
            pending = load(store, key)
            if pending is None:
                continue
            due = pending.next_tick()
            if due is None or due > watermark:
                ticks.note(partition, key, due)
                continue
            outcome = self.engine.on_tick(pending, watermark)
            save(store, key, outcome.state)
            ticks.note(partition, key, outcome.state.next_tick())
            await self._emit(outcome)

    def _apply(self, state: KeyState | None, item: Input) -> Outcome:
        if isinstance(item, RequestRecord):
            return self.engine.on_request(state, item)
        if isinstance(item, LifecycleEvent):
            return self.engine.on_lifecycle(state, item)
        return self.engine.on_forward(state, item)

    def _restore(
        self,
        subject: bytes,
        states: dict[bytes, KeyState],
        done: dict[bytes, list[Input]],
        store: MutableMapping[bytes, bytes],
    ) -> None:
        """After a record of `subject` failed: its state as it was before that record (the stored state plus
        the earlier records of the key, re-applied; their alerts and forwards are already out)."""
        earlier = done.get(subject)
        if not earlier:
            states.pop(subject, None)
            return
        state = load(store, subject)
        for item in earlier:
            state = self._apply(state, item).state
        assert state is not None
        states[subject] = state

    def _touch(self, key: bytes, state: KeyState, partition: int | None) -> list[bytes]:
        """Tell the key cap `key` has state now; the keys it evicts (counted)."""
        if self.key_cap is None:
            return []
        evicted = self.key_cap.touch(key, registry_recency(state.registry), partition)
        if evicted:
            self.metrics.keys_evicted.inc(len(evicted))
        return evicted

    async def _emit(self, outcome: Outcome) -> None:
        # Forwards first: once an alert is visible, the hand-off it implies is already on its way.
        # A message the sink can never deliver has been logged and counted there (keywatch_send_failures_total);
        # it costs that message only, not the record's other outputs.
        for fwd in outcome.forwards:
            with contextlib.suppress(Undeliverable):
                await self.sink.send("keyed", fwd.subject.encode(), forward_message(fwd))
        for alert in outcome.alerts:
            try:
                await self.sink.alerts.write([alert])
            except Undeliverable:
                continue
            self.metrics.observe_alert(
                alert.type, alert.data.severity, alert.data.status, alert.time, tenant=alert.data.tenant
            )
