"""The two processing steps the worker runs, written against `Sink` (sinks/base.py: the keyed channel, the alert
and dead-letter sinks) and a mapping, so tests need no broker.

ingest: raw input record -> dead letter (with reason) or a message on the keyed topic, keyed `<tenant>/<key_id>`.
    Producers may key their records any way they like; re-keying puts every event of one key (requests,
    lifecycle events, hand-offs from other keys) in one partition, in order, next to that key's state.
detect: keyed message + the key's state -> new state, alerts, forwards (to the keyed topic).

The worker runs both in batches (`route` + `pack_batch` in the ingest stage, `detect_message` in the detect
agent): ingest packs the accepted records of a batch into one keyed message per keyed-topic partition
(`TAG_PACKED`, records already normalised by pydantic, rebuilt with `model_construct` in detect), and detect
writes each key's state once per packed message. `ingest` and `detect` are the one-record forms of the same
steps (single `R`/`L` messages, still understood by detect).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import logging
import traceback
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from aiokafka.partitioner import murmur2

from keywatch.contract.deadletter import letter_key, make_letter
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.codec import decode_state, encode_state, peek
from keywatch.core.engine import Engine, Forward, Outcome, ts_ms
from keywatch.core.state import KeyRegistryEntry, KeyState
from keywatch.metrics import Metrics
from keywatch.parsing import Rejection, decode
from keywatch.pipeline.ticks import TickIndex
from keywatch.redact import Redactor
from keywatch.sinks.base import Sink, Undeliverable

log = logging.getLogger(__name__)

# Keyed-topic envelope: one tag byte, then the payload.
TAG_REQUEST = b"R"
TAG_LIFECYCLE = b"L"
TAG_FORWARD = b"F"
# Many records of one keyed-topic partition in one message: TAG_PACKED + JSON array of compact entries
# (`compact`), each ["R", ts_ms, fields...] or ["L", ts_ms, fields...].
TAG_PACKED = b"P"
# A packed message holds at most this many bytes of entries (far below Kafka's 1 MB default message limit).
PACKED_MAX_BYTES = 256 * 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_REQUEST_FIELDS = (
    "tenant",
    "key_id",
    "env",
    "ip",
    "method",
    "path",
    "status",
    "latency_ms",
    "user_agent",
    "request_id",
)
_LIFECYCLE_FIELDS = ("type", "tenant", "key_id", "name", "env", "role", "actor", "replaces_key_id", "ip")


def compact(record: RequestRecord | LifecycleEvent) -> list[Any]:
    """A validated record as a compact JSON-able list: tag, event time in epoch ms (truncated to the ms, as
    the JSON form `model_dump_json` writes it), then the fields in a fixed order."""
    when = (record.ts - _EPOCH) // _MS
    if isinstance(record, RequestRecord):
        return ["R", when, *(getattr(record, f) for f in _REQUEST_FIELDS)]
    return ["L", when, *(getattr(record, f) for f in _LIFECYCLE_FIELDS)]


def expand(entry: list[Any]) -> RequestRecord | LifecycleEvent:
    """Inverse of `compact`, without validation: the entry was made from a validated record by ingest."""
    ts = _EPOCH + timedelta(milliseconds=entry[1])
    if entry[0] == "R":
        return _construct(RequestRecord, _REQUEST_ORDER, [ts, *entry[2:]])
    if entry[0] == "L":
        return _construct(LifecycleEvent, _LIFECYCLE_ORDER, [entry[2], ts, *entry[3:]])
    raise ValueError(f"packed entry with unknown tag {entry[0]!r}")


_REQUEST_ORDER = ("ts", *_REQUEST_FIELDS)  # the models' field order (their JSON order)
_LIFECYCLE_ORDER = ("type", "ts", *_LIFECYCLE_FIELDS[1:])
_Model = TypeVar("_Model", RequestRecord, LifecycleEvent)


def _construct(model: type[_Model], order: tuple[str, ...], values: list[Any]) -> _Model:
    """What `model.model_construct(**dict(zip(order, values)))` builds, at a third of its cost (detect runs it
    for every record): an instance whose `__dict__` holds the fields in the model's order, all marked as set."""
    if len(values) != len(order):
        raise ValueError(f"packed {model.__name__} entry with {len(values)} fields, expected {len(order)}")
    obj = model.__new__(model)
    object.__setattr__(obj, "__dict__", dict(zip(order, values, strict=True)))
    object.__setattr__(obj, "__pydantic_fields_set__", set(order))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def record_tags(value: bytes) -> list[bytes]:
    """The tag of every record a keyed message carries (b"R", b"L", b"F"; many for a packed message)."""
    if value[:1] == TAG_PACKED:
        return [str(entry[0]).encode() for entry in orjson.loads(value[1:])]
    return [value[:1]]


@dataclass(frozen=True, slots=True)
class Accepted:
    """`route`'s verdict for a valid record: its normalised form, for the keyed topic."""

    record: RequestRecord | LifecycleEvent
    tag: bytes

    @property
    def subject(self) -> bytes:
        """`<tenant>/<key_id>`: the keyed topic's key."""
        return self.record.subject.encode()


@dataclass(frozen=True, slots=True)
class Rejected:
    """`route`'s verdict for a bad record: the (redacted) key and value to dead-letter, and why."""

    key: bytes | None
    value: bytes | None
    rejection: Rejection


Source = tuple[str, int]  # an input (topic, partition)


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter ready to send: its (bounded) Kafka key and value, its reason code (counted once the broker
    has it) and the input record it stands for."""

    key: bytes | None
    value: bytes
    reason_code: str
    source: Source
    offset: int


@dataclass
class IngestBatch:
    """What one batch of input records becomes: packed keyed messages per partition, and dead letters.

    `keyed_from[p][i]` says which input records `keyed[p][i]` carries: the smallest offset per input partition
    (if it is not acknowledged, that input partition is read again from there).
    """

    keyed: dict[int, list[bytes]] = field(default_factory=dict)
    keyed_from: dict[int, list[dict[Source, int]]] = field(default_factory=dict)
    dead_letters: list[Letter] = field(default_factory=list)
    accepted: int = 0


@dataclass(frozen=True)
class Topics:
    """The input topic names, to tell a request from a lifecycle event."""

    requests: str
    lifecycle: str


class Processor:
    """Runs ingest and detect against a sink and a state mapping."""

    def __init__(
        self,
        engine: Engine,
        sink: Sink,
        topics: Topics,
        *,
        max_record_bytes: int = 64 * 1024,
        max_future_skew: timedelta | None = timedelta(minutes=5),
        clock: Any = None,
        metrics: Metrics | None = None,
        redactor: Redactor | None = None,
        key_cap: KeyCap | None = None,
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.topics = topics
        self.max_record_bytes = max_record_bytes
        self.max_future_skew = max_future_skew
        self._clock = clock or (lambda: datetime.now(UTC))
        self.metrics = metrics or Metrics()
        self.redactor = redactor or Redactor()
        self.key_cap = key_cap
        self.ticks = TickIndex()

    def route(self, topic: str, key: bytes | None, value: bytes | None) -> Accepted | Rejected:
        """Redact and validate one raw input record: where it goes. Pure: no metrics, no sends.

        Secrets are replaced in the decoded record before validation (`decode` with the redactor), so nothing
        downstream (state, alerts, rejection reasons, logs) ever holds one; a rejected record's key and value are
        redacted with `Redactor.redact_payload`, which is safe for any bytes (dead letters included).
        """
        if topic == self.topics.requests:
            model: type[RequestRecord] | type[LifecycleEvent] = RequestRecord
            tag = TAG_REQUEST
        elif topic == self.topics.lifecycle:
            model, tag = LifecycleEvent, TAG_LIFECYCLE
        else:  # pragma: no cover - ingest only subscribes to the two input topics
            raise ValueError(f"unexpected topic {topic!r}")
        result = decode(
            value,
            model,
            max_bytes=self.max_record_bytes,
            now=self._clock(),
            max_future_skew=self.max_future_skew,
            redactor=self.redactor,
        )
        if isinstance(result, Rejection):
            return Rejected(self._redacted(key), self._redacted(value), result)
        return Accepted(result, tag)

    def _redacted(self, raw: bytes | None) -> bytes | None:
        """`Redactor.redact_payload` of a rejected (or failed) record's key or value; should it ever fail, a
        token of the whole, never the raw bytes."""
        if raw is None:
            return None
        try:
            return self.redactor.redact_payload(raw)
        except Exception:  # a bug in redaction must not put the raw record in a dead letter
            log.exception("redaction failed on a record: its dead letter holds a hash of it instead")
            return self.redactor.token_for(raw)

    async def ingest(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Validate one raw input record: dead-letter it with a reason, or re-key it onto the keyed topic."""
        verdict = self.route(topic, key, value)
        if isinstance(verdict, Rejected):
            self.metrics.records.labels(topic, "rejected").inc()
            await self.dead_letter(topic, partition, offset, verdict.key, verdict.value, verdict.rejection)
            return
        self.metrics.records.labels(topic, "accepted").inc()
        self.metrics.observe_event_time(topic, verdict.record.ts)
        # Forward the normalised form: detect re-validates cheaply and never sees producer-specific extras.
        payload = verdict.record.model_dump_json(exclude_none=True).encode()
        await self.sink.send("keyed", verdict.subject, verdict.tag + payload)

    def pack_batch(
        self,
        records: Iterable[tuple[str, int, int, bytes | None, bytes | None]],
        partition_of: Callable[[bytes], int],
    ) -> IngestBatch:
        """Route a batch of (topic, partition, offset, key, value) input records: packed keyed messages per
        keyed-topic partition (`partition_of(subject)`), input order kept within each, and dead letters.

        Counts the records per (topic, outcome) and moves the event-time gauges once per batch.
        """
        out = IngestBatch()
        entries: dict[int, list[bytes]] = {}
        origins: dict[int, dict[Source, int]] = {}
        sizes: dict[int, int] = {}
        counts: dict[tuple[str, str], int] = {}
        newest: dict[str, datetime] = {}
        for topic, partition, offset, key, value in records:
            try:
                verdict = self.route(topic, key, value)
                if isinstance(verdict, Rejected):
                    outcome = "rejected"
                    letter = self._letter(topic, partition, offset, verdict.key, verdict.value, verdict.rejection)
                    out.dead_letters.append(
                        Letter(letter_key(verdict.key), letter, verdict.rejection.code, (topic, partition), offset)
                    )
                else:
                    outcome = "accepted"
                    record = verdict.record
                    entry = orjson.dumps(compact(record))
                    target = partition_of(verdict.subject)
                    if sizes.get(target, 0) + len(entry) > PACKED_MAX_BYTES and entries.get(target):
                        out.keyed.setdefault(target, []).append(_pack(entries.pop(target)))
                        out.keyed_from.setdefault(target, []).append(origins.pop(target))
                        sizes[target] = 0
                    entries.setdefault(target, []).append(entry)
                    origins.setdefault(target, {}).setdefault((topic, partition), offset)
                    sizes[target] = sizes.get(target, 0) + len(entry) + 1
                    if topic not in newest or record.ts > newest[topic]:
                        newest[topic] = record.ts
                    out.accepted += 1
            except Exception as exc:  # a bug must cost one record, never the batch
                log.exception("ingest failed on %s[%d]@%d", topic, partition, offset)
                outcome = "rejected"
                key, value = self._redacted(key), self._redacted(value)
                rejection = internal(exc)
                letter = self._letter(topic, partition, offset, key, value, rejection)
                out.dead_letters.append(Letter(letter_key(key), letter, rejection.code, (topic, partition), offset))
            counts[(topic, outcome)] = counts.get((topic, outcome), 0) + 1
        for target, pending in entries.items():
            out.keyed.setdefault(target, []).append(_pack(pending))
            out.keyed_from.setdefault(target, []).append(origins[target])
        for (topic, outcome), n in counts.items():
            self.metrics.records.labels(topic, outcome).inc(n)
        for topic, ts in newest.items():
            self.metrics.observe_event_time(topic, ts)
        return out

    async def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        rejection: Rejection,
    ) -> None:
        """Send the record (a bounded prefix of it past a size) and the reason to the dead-letter topic; counted
        once the dead-letter sink has delivered it (it raises `Undeliverable` for a letter that can never be sent)."""
        value_out = self._letter(topic, partition, offset, key, value, rejection)
        letter = Letter(letter_key(key), value_out, rejection.code, (topic, partition), offset)
        try:
            await self.sink.letters.write([letter])
        except Undeliverable:
            return
        self.metrics.dead_letters.labels(rejection.code).inc()

    def _letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        rejection: Rejection,
    ) -> bytes:
        """The dead letter of one record, bounded (`make_letter`), logged; counted by whoever sends it, once sent."""
        letter = make_letter(
            source_topic=topic,
            partition=partition,
            offset=offset,
            reason_code=rejection.code,
            reason=rejection.reason,
            rejected_at=self._clock(),
            key=key,
            value=value or b"",
        )
        log.info("dead letter %s[%d]@%d: %s", topic, partition, offset, letter.reason)
        return letter.model_dump_json().encode()

    async def detect(
        self, key: bytes, value: bytes, store: MutableMapping[bytes, bytes], partition: int | None = None
    ) -> Outcome | None:
        """Process one single-record keyed message (R, L, F) against the key's state in `store`; emit alerts and
        forwards. `partition`: the keyed-topic partition it came from (computed from the key when None)."""
        tag, payload = value[:1], value[1:]
        if self.key_cap is not None and self.key_cap.stale:
            self.key_cap.rebuild(store.items())
            self.ticks.rebuild(store.items(), self.key_cap.partition_of)
        raw_state = store.get(key)
        state = decode_state(raw_state) if raw_state else None
        event_ms: int | None
        if tag == TAG_REQUEST:
            request = RequestRecord.model_validate_json(payload)
            outcome, event_ms = self.engine.on_request(state, request), ts_ms(request.ts)
        elif tag == TAG_LIFECYCLE:
            event = LifecycleEvent.model_validate_json(payload)
            outcome, event_ms = self.engine.on_lifecycle(state, event), ts_ms(event.ts)
        elif tag == TAG_FORWARD:
            forward = Forward(**orjson.loads(payload))
            outcome, event_ms = self.engine.on_forward(state, forward), forward.ts_ms
        else:
            log.error("keyed message with unknown tag %r under key %r: skipped", tag, key)
            return None
        store[key] = encode_state(outcome.state)
        for evicted in self._touch(key, outcome.state, partition):
            store.pop(evicted, None)
        await self._emit(outcome)
        if partition is not None:
            await self.run_ticks(store, partition, [(key, outcome.state)], event_ms)
        return outcome

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

        A packed message's records are processed in order; each key's state is decoded once (on its first
        record) and written back once, after the last record (coalesced: one changelog record per key per
        packed message). Every key of a packed message hashes to `partition`, the partition the table writes
        go to. A record that fails costs that record only: it is dead-lettered and its key's state is
        rebuilt from the message's records before it.
        """
        if value[:1] != TAG_PACKED:
            if key is None:
                log.error("keyed message without a key at %s[%d]@%d: skipped", topic, partition, offset)
                return 0
            await self.detect(key, value, store, partition)
            return 1
        if self.key_cap is not None and self.key_cap.stale:
            self.key_cap.rebuild(store.items())
            self.ticks.rebuild(store.items(), self.key_cap.partition_of)
        entries = orjson.loads(value[1:])
        newest = max((entry[1] for entry in entries if isinstance(entry, list) and len(entry) > 1), default=None)
        states: dict[bytes, KeyState] = {}  # decoded this message, written back at its end
        done: dict[bytes, list[RequestRecord | LifecycleEvent]] = {}
        for entry in entries:
            subject = b""
            try:
                record = expand(entry)
                subject = record.subject.encode()
                state = states.get(subject)
                if state is None:
                    raw_state = store.get(subject)
                    state = decode_state(raw_state) if raw_state else None
                if isinstance(record, RequestRecord):
                    outcome = self.engine.on_request(state, record)
                else:
                    outcome = self.engine.on_lifecycle(state, record)
                states[subject] = outcome.state
                done.setdefault(subject, []).append(record)
                for evicted in self._touch(subject, outcome.state, partition):
                    states.pop(evicted, None)
                    done.pop(evicted, None)
                    store.pop(evicted, None)
                await self._emit(outcome)
            except Exception as exc:  # a bug must cost one record, never the message
                log.exception("detect failed on a record of %s[%d]@%d", topic, partition, offset)
                if subject:
                    self._restore(subject, states, done, store)
                raw = orjson.dumps(entry)
                await self.dead_letter(topic, partition, offset, subject or key, raw, internal(exc))
        for subject, state in states.items():
            store[subject] = encode_state(state)
        await self.run_ticks(store, partition, states.items(), newest)
        return len(entries)

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
            raw_state = store.get(key)
            if not raw_state:
                continue
            state = decode_state(raw_state)
            due = state.next_tick()
            if due is None or due > watermark:
                ticks.note(partition, key, due)
                continue
            outcome = self.engine.on_tick(state, watermark)
            store[key] = encode_state(outcome.state)
            ticks.note(partition, key, outcome.state.next_tick())
            await self._emit(outcome)

    def _restore(
        self,
        subject: bytes,
        states: dict[bytes, KeyState],
        done: dict[bytes, list[RequestRecord | LifecycleEvent]],
        store: MutableMapping[bytes, bytes],
    ) -> None:
        """After a record of `subject` failed: its state as it was before that record (the stored state plus
        the message's earlier records of the key, re-applied; their alerts and forwards are already out)."""
        earlier = done.get(subject)
        if not earlier:
            states.pop(subject, None)
            return
        raw_state = store.get(subject)
        state = decode_state(raw_state) if raw_state else None
        for record in earlier:
            if isinstance(record, RequestRecord):
                state = self.engine.on_request(state, record).state
            else:
                state = self.engine.on_lifecycle(state, record).state
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
                await self.sink.send("keyed", fwd.subject.encode(), TAG_FORWARD + orjson.dumps(_forward_dict(fwd)))
        for alert in outcome.alerts:
            try:
                await self.sink.alerts.write([alert])
            except Undeliverable:
                continue
            self.metrics.observe_alert(
                alert.type, alert.data.severity, alert.data.status, alert.time, tenant=alert.data.tenant
            )


def _pack(entries: list[bytes]) -> bytes:
    return TAG_PACKED + b"[" + b",".join(entries) + b"]"


def internal(exc: Exception) -> Rejection:
    """The rejection of a record keywatch failed on (a bug): where, without the record's content."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return Rejection("internal", f"keywatch failed on this record: {type(exc).__name__}{at} (see worker log)")


def _forward_dict(fwd: Forward) -> dict[str, Any]:
    return {"tenant": fwd.tenant, "key_id": fwd.key_id, "kind": fwd.kind, "payload": fwd.payload, "ts_ms": fwd.ts_ms}


def partition_of(subject: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2, made positive, modulo): the partition faust's producer and ingest put
    `subject` in. The hash is cached (aiokafka's murmur2 is pure Python, ~6 µs; a key's subject repeats)."""
    return _murmur2(subject) % partitions


@functools.lru_cache(maxsize=1 << 15)
def _murmur2(subject: bytes) -> int:
    return murmur2(subject) & 0x7FFFFFFF  # type: ignore[no-any-return]


_RECENCY_FIELDS = ("last_seen_ms", "created_ms", "revoked_ms", "role_changed_ms")


def recency(registry: dict[str, Any]) -> int:
    """When a key was last heard of (event time, ms) from its serialised registry entry: its eviction order."""
    times = [registry.get(f) for f in _RECENCY_FIELDS]
    return max((t for t in times if isinstance(t, int)), default=0)


def registry_recency(entry: KeyRegistryEntry) -> int:
    """`recency` of a decoded registry entry (what detect has in hand, without serialising it)."""
    times = [getattr(entry, f) for f in _RECENCY_FIELDS]
    return max((t for t in times if t is not None), default=0)


class KeyCap:
    """Bounds the keys with state: at most `per_partition` keys per partition of the keyed topic.

    The cap is per partition so that it means the same on every worker whatever the assignment (the total over
    all workers is at most `max_keys`), and so that an eviction happens in the partition of the event that
    caused it (faust writes the deletion to that changelog partition). Beyond the cap the key least recently
    seen in event time goes (ties: the smaller key), never the key being processed. The index is in memory only:
    after a rebalance or a restart it is rebuilt from the table (`stale`), so it is a function of the state.
    """

    def __init__(self, max_keys: int, partitions: int) -> None:
        self.partitions = partitions
        self.per_partition = max(1, -(-max_keys // partitions))
        self.stale = True
        self._recency: dict[int, dict[bytes, int]] = {}
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}

    def partition_of(self, key: bytes) -> int:
        """The keyed-topic partition of a key (Kafka's default partitioner, which the producer uses)."""
        return partition_of(key, self.partitions)

    def __len__(self) -> int:
        return sum(len(r) for r in self._recency.values())

    def rebuild(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Index every key of the table (after an assignment or recovery)."""
        self._recency.clear()
        self._heaps.clear()
        for key, value in items:
            try:
                when = registry_recency(peek(value)[0])
            except ValueError:  # undecodable state (msgspec's and orjson's decode errors are ValueErrors)
                when = 0
            self._recency.setdefault(self.partition_of(key), {})[key] = when
        self.stale = False
        log.info("key index rebuilt: %d keys, cap %d per partition", len(self), self.per_partition)

    def touch(self, key: bytes, when_ms: int, partition: int | None = None) -> list[bytes]:
        """Record that `key` has state last seen at `when_ms`; return the keys to evict from its partition.

        `partition`: the key's keyed-topic partition when the caller knows it (the message's), else computed.
        A partition's eviction heap exists only once the partition has reached the cap: below it (the normal
        case) the index is one dict entry per key (the heap with its stale entries cost ~350 B per key).
        """
        if partition is None:
            partition = self.partition_of(key)
        rec = self._recency.setdefault(partition, {})
        heap = self._heaps.get(partition)
        if rec.get(key) != when_ms:
            rec[key] = when_ms
            if heap is not None:
                heapq.heappush(heap, (when_ms, key))
                if len(heap) > 2 * len(rec) + 64:  # drop stale entries now and then
                    heap = self._heaps[partition] = [(t, k) for k, t in rec.items()]
                    heapq.heapify(heap)
        if len(rec) <= self.per_partition:
            return []
        if heap is None:
            heap = self._heaps[partition] = [(t, k) for k, t in rec.items()]
            heapq.heapify(heap)
        evicted: list[bytes] = []
        kept: list[tuple[int, bytes]] = []
        while len(rec) > self.per_partition and heap:
            entry = heapq.heappop(heap)
            t, k = entry
            if rec.get(k) != t:
                continue  # stale heap entry: the key was touched again since
            if k == key:
                kept.append(entry)
                continue
            del rec[k]
            evicted.append(k)
        for entry in kept:
            heapq.heappush(heap, entry)
        return evicted
