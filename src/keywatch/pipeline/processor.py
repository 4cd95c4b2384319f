"""The two processing steps the worker runs, written against `Sink` and a mapping so tests need no broker.

ingest: raw input record -> dead letter (with reason) or a message on the keyed topic, keyed `<tenant>/<key_id>`.
    Producers may key their records any way they like; re-keying puts every event of one key (requests,
    lifecycle events, hand-offs from other keys) in one partition, in order, next to that key's state.
detect: keyed message + the key's state -> new state, alerts, forwards (to the keyed topic).
"""

from __future__ import annotations

import base64
import heapq
import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from keywatch.contract.deadletter import DeadLetter
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import Engine, Forward, Outcome
from keywatch.core.state import KeyState
from keywatch.metrics import Metrics
from keywatch.parsing import Rejection, decode
from keywatch.redact import Redactor
from keywatch.sinks.base import Sink

log = logging.getLogger(__name__)

# Keyed-topic envelope: one tag byte, then the payload.
TAG_REQUEST = b"R"
TAG_LIFECYCLE = b"L"
TAG_FORWARD = b"F"


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

    async def ingest(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Validate one raw input record: dead-letter it with a reason, or re-key it onto the keyed topic.

        Secrets are replaced first, so nothing downstream (state, alerts, dead letters, logs) ever holds one.
        """
        if value is not None:
            value = self.redactor.redact(value)
        if key is not None:
            key = self.redactor.redact(key)
        if topic == self.topics.requests:
            model: type[RequestRecord] | type[LifecycleEvent] = RequestRecord
            tag = TAG_REQUEST
        elif topic == self.topics.lifecycle:
            model, tag = LifecycleEvent, TAG_LIFECYCLE
        else:  # pragma: no cover - the agent only subscribes to the two input topics
            raise ValueError(f"unexpected topic {topic!r}")
        result = decode(
            value,
            model,
            max_bytes=self.max_record_bytes,
            now=self._clock(),
            max_future_skew=self.max_future_skew,
        )
        if isinstance(result, Rejection):
            self.metrics.records.labels(topic, "rejected").inc()
            await self.dead_letter(topic, partition, offset, key, value, result)
            return
        self.metrics.records.labels(topic, "accepted").inc()
        self.metrics.observe_event_time(topic, result.ts)
        # Forward the normalised form: detect re-validates cheaply and never sees producer-specific extras.
        payload = result.model_dump_json(exclude_none=True).encode()
        await self.sink.send("keyed", result.subject.encode(), tag + payload)

    async def dead_letter(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        rejection: Rejection,
    ) -> None:
        """Send the untouched record and the reason to the dead-letter topic."""
        raw = value or b""
        letter = DeadLetter(
            source_topic=topic,
            partition=partition,
            offset=offset,
            reason_code=rejection.code,
            reason=rejection.reason,
            rejected_at=self._clock(),
            key_b64=base64.b64encode(key).decode() if key is not None else None,
            payload_b64=base64.b64encode(raw).decode(),
            payload_size=len(raw),
        )
        log.info("dead letter %s[%d]@%d: %s", topic, partition, offset, rejection.reason)
        self.metrics.dead_letters.labels(rejection.code).inc()
        await self.sink.send("dlq", key, letter.model_dump_json().encode())

    async def detect(self, key: bytes, value: bytes, store: MutableMapping[bytes, bytes]) -> Outcome | None:
        """Process one keyed message against the key's state in `store`; emit alerts and forwards."""
        tag, payload = value[:1], value[1:]
        if self.key_cap is not None and self.key_cap.stale:
            self.key_cap.rebuild(store.items())
        raw_state = store.get(key)
        state = KeyState.from_dict(orjson.loads(raw_state)) if raw_state else None
        if tag == TAG_REQUEST:
            outcome = self.engine.on_request(state, RequestRecord.model_validate_json(payload))
        elif tag == TAG_LIFECYCLE:
            outcome = self.engine.on_lifecycle(state, LifecycleEvent.model_validate_json(payload))
        elif tag == TAG_FORWARD:
            outcome = self.engine.on_forward(state, Forward(**orjson.loads(payload)))
        else:
            log.error("keyed message with unknown tag %r under key %r: skipped", tag, key)
            return None
        store[key] = orjson.dumps(outcome.state.to_dict())
        if self.key_cap is not None:
            for evicted in self.key_cap.touch(key, recency(outcome.state.registry.to_dict())):
                store.pop(evicted, None)
                self.metrics.keys_evicted.inc()
        # Forwards first: once an alert is visible, the hand-off it implies is already on its way.
        for fwd in outcome.forwards:
            await self.sink.send("keyed", fwd.subject.encode(), TAG_FORWARD + orjson.dumps(_forward_dict(fwd)))
        for alert in outcome.alerts:
            await self.sink.send("alerts", alert.subject.encode(), alert.model_dump_json().encode())
            self.metrics.observe_alert(alert.type, alert.data.severity, alert.data.status, alert.time)
        return outcome


def _forward_dict(fwd: Forward) -> dict[str, Any]:
    return {"tenant": fwd.tenant, "key_id": fwd.key_id, "kind": fwd.kind, "payload": fwd.payload, "ts_ms": fwd.ts_ms}


def recency(registry: dict[str, Any]) -> int:
    """When a key was last heard of (event time, ms) from its registry entry: its eviction order."""
    times = [registry.get(f) for f in ("last_seen_ms", "created_ms", "revoked_ms", "role_changed_ms")]
    return max((t for t in times if isinstance(t, int)), default=0)


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
        return (murmur2(key) & 0x7FFFFFFF) % self.partitions  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return sum(len(r) for r in self._recency.values())

    def rebuild(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Index every key of the table (after an assignment or recovery)."""
        self._recency.clear()
        self._heaps.clear()
        for key, value in items:
            try:
                registry = orjson.loads(value).get("r", {})
            except (orjson.JSONDecodeError, AttributeError):
                registry = {}
            self._recency.setdefault(self.partition_of(key), {})[key] = recency(registry)
        for partition, rec in self._recency.items():
            self._heaps[partition] = [(t, k) for k, t in rec.items()]
            heapq.heapify(self._heaps[partition])
        self.stale = False
        log.info("key index rebuilt: %d keys, cap %d per partition", len(self), self.per_partition)

    def touch(self, key: bytes, when_ms: int) -> list[bytes]:
        """Record that `key` has state last seen at `when_ms`; return the keys to evict from its partition."""
        partition = self.partition_of(key)
        rec = self._recency.setdefault(partition, {})
        heap = self._heaps.setdefault(partition, [])
        if rec.get(key) != when_ms:
            rec[key] = when_ms
            heapq.heappush(heap, (when_ms, key))
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
        if len(heap) > 4 * len(rec) + 64:  # drop stale entries now and then
            self._heaps[partition] = [(t, k) for k, t in rec.items()]
            heapq.heapify(self._heaps[partition])
        return evicted
