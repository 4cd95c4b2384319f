"""Ingest: a raw input record validated, redacted and packed for the keyed topic, or dead-lettered with a reason.

Producers may key their records any way they like; re-keying onto `<tenant>/<key_id>` puts every event of one
key (requests, lifecycle events, hand-offs from other keys) in one keyed-topic partition, in order, next to that
key's state. `IngestStep.route` is the verdict on one record (pure); `pack_batch` turns a batch of input records
into one packed keyed message per keyed-topic partition (the worker's path) and `ingest` sends one record as a
one-record message (the same `route`). Dead letters are made here too (`Letter`, `dead_letter`), for ingest and
for the records detect fails on.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from keywatch.contract.deadletter import Letter, Source, letter_key, make_letter
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.metrics import Metrics
from keywatch.parsing import Rejection, decode
from keywatch.pipeline.wire import PACKED_MAX_BYTES, TAG_LIFECYCLE, TAG_REQUEST, compact, pack, single
from keywatch.redact import Redactor
from keywatch.sinks.base import Sink, Undeliverable

log = logging.getLogger(__name__)


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


class IngestStep:
    """Validates, redacts and re-keys input records; sends one-record messages and dead letters to a sink."""

    def __init__(
        self,
        sink: Sink,
        topics: Topics,
        *,
        max_record_bytes: int = 64 * 1024,
        max_future_skew: timedelta | None = timedelta(minutes=5),
        clock: Any = None,
        metrics: Metrics | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.sink = sink
        self.topics = topics
        self.max_record_bytes = max_record_bytes
        self.max_future_skew = max_future_skew
        self._clock = clock or (lambda: datetime.now(UTC))
        self.metrics = metrics or Metrics()
        self.redactor = redactor or Redactor()

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
        await self.sink.send("keyed", verdict.subject, single(verdict.tag, verdict.record))

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
                        out.keyed.setdefault(target, []).append(pack(entries.pop(target)))
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
            out.keyed.setdefault(target, []).append(pack(pending))
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


def internal(exc: Exception) -> Rejection:
    """The rejection of a record keywatch failed on (a bug): where, without the record's content."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return Rejection("internal", f"keywatch failed on this record: {type(exc).__name__}{at} (see worker log)")
