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
    PACKED_MAX_BYTES,
    TAG_FORWARD,
    TAG_LIFECYCLE,
    TAG_PACKED,
    TAG_REQUEST,
    compact_forward,
    expand,
    forward_message,
    pack,
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
        # The keyed-topic partition of a subject, None while unknown: with it, the hand-offs of a keyed message
        # go out packed, one message per partition; without, one message per subject.
        self.partition_of: Callable[[bytes], int | None] | None = None
        self._forwards: list[Forward] = []  # hand-offs of the batch in progress, not yet sent
        self._pack_forwards = False

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
        # (an entry that is not a list with an integer time is dead-lettered below: it moves no watermark)
        newest = max(
            (entry[1] for entry in entries if isinstance(entry, list) and len(entry) > 1 and type(entry[1]) is int),
            default=None,
        )

        def read(entry: Any) -> tuple[bytes, Input]:
            record = expand(entry)
            return record.subject.encode(), record

        async def failed(entry: Any, subject: bytes, exc: Exception) -> None:
            log.error("detect failed on a record of %s[%d]@%d", topic, partition, offset, exc_info=exc)
            await self.dead_letter(topic, partition, offset, subject or key, orjson.dumps(entry), internal(exc))

        await self.detect_batch(entries, read, store, partition, newest, failed, pack_forwards=True)
        return len(entries)

    async def detect_batch(
        self,
        entries: Sequence[_Entry],
        read: Callable[[_Entry], tuple[bytes, Input]],
        store: MutableMapping[bytes, bytes],
        partition: int | None,
        newest_ms: int | None,
        failed: Callable[[_Entry, bytes, Exception], Awaitable[None]] | None = None,
        *,
        pack_forwards: bool = False,
    ) -> list[Outcome]:
        """Process records in order against their keys' states in `store`; return their outcomes.

        `read` gives an entry's key and record (an entry that fails there fails like any other); `newest_ms` is
        the newest event time of the entries, to move the partition's watermark to. With `failed`, a record
        that fails is handed to it and costs that record only (its key's state is restored to what it was
        before it); without, the failure raises and no state is written. The hand-offs go out after the batch,
        or before an alert: one message each, or with `pack_forwards` packed (`_send_forwards`).
        """
        if self.key_cap is not None and self.key_cap.stale:
            self.key_cap.rebuild(store.items())
            self.ticks.rebuild(store.items(), self.key_cap.partition_of)
        self._forwards = []  # a batch that raised wrote no state: its hand-offs are not sent either
        self._pack_forwards = pack_forwards
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
                if isinstance(item, Forward):
                    self.metrics.handoffs.inc()
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
        await self._send_forwards()
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
        await self._send_forwards()

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
        # Hand-offs are held until the batch ends (`_send_forwards`: packed) or an alert is due: they go first,
        # so once an alert is visible, the hand-offs it implies are already on their way.
        # A message the sink can never deliver has been logged and counted there (keywatch_send_failures_total);
        # it costs that message only, not the record's other outputs.
        self._forwards.extend(outcome.forwards)
        if not outcome.alerts:
            return
        await self._send_forwards()
        for alert in outcome.alerts:
            try:
                await self.sink.alerts.write([alert])
            except Undeliverable:
                continue
            self.metrics.observe_alert(
                alert.type, alert.data.severity, alert.data.status, alert.time, tenant=alert.data.tenant
            )

    async def _send_forwards(self) -> None:
        """Send the hand-offs held, in order per subject: one message each, or (`pack_forwards`) packed, one
        message per keyed-topic partition (no more than `PACKED_MAX_BYTES` of entries each) when the partition
        is known, else one message per subject; a lone hand-off as its one-record message."""
        pending, self._forwards = self._forwards, []
        if not self._pack_forwards:
            for fwd in pending:
                with contextlib.suppress(Undeliverable):
                    await self.sink.send("keyed", fwd.subject.encode(), forward_message(fwd))
            return
        groups: dict[tuple[bytes | None, int | None], list[Forward]] = {}
        for fwd in pending:
            subject = fwd.subject.encode()
            partition = self.partition_of(subject) if self.partition_of is not None else None
            groups.setdefault((None, partition) if partition is not None else (subject, None), []).append(fwd)
        for (key, partition), fwds in groups.items():
            if len(fwds) == 1:
                with contextlib.suppress(Undeliverable):
                    await self.sink.send(
                        "keyed", fwds[0].subject.encode(), forward_message(fwds[0]), partition=partition
                    )
                continue
            for value in _packed(fwds):
                with contextlib.suppress(Undeliverable):
                    await self.sink.send("keyed", key, value, partition=partition)


def _packed(fwds: list[Forward]) -> list[bytes]:
    """Packed messages of hand-offs, in order, each under `PACKED_MAX_BYTES` of entries (a lone larger one alone)."""
    out: list[bytes] = []
    entries: list[bytes] = []
    size = 0
    for fwd in fwds:
        entry = orjson.dumps(compact_forward(fwd))
        if entries and size + len(entry) > PACKED_MAX_BYTES:
            out.append(pack(entries))
            entries, size = [], 0
        entries.append(entry)
        size += len(entry) + 1
    out.append(pack(entries))
    return out
