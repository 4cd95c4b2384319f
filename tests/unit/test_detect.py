"""The detect step (pipeline/detect.py): the one-record path is the batched path with one record, so both give
the same alerts, forwards and state on the same input; a one-record failure raises and writes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keywatch.config import Settings
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.codec import decode_state
from keywatch.core.engine import Forward, ts_ms
from keywatch.metrics import Metrics
from keywatch.pipeline.detect import DetectStep, Input, _packed
from keywatch.pipeline.ingest import Accepted, IngestStep, Rejected, Topics
from keywatch.pipeline.keycap import KeyCap
from keywatch.pipeline.wire import (
    PACKED_MAX_BYTES,
    TAG_FORWARD,
    TAG_PACKED,
    compact,
    compact_forward,
    expand,
    pack,
    read_forward,
    single,
    unpack,
)
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink
from tests.factories import lifecycle_dict
from tests.integration.kafka_helpers import build


async def _no_dead_letter(*letter: object) -> None:
    raise AssertionError(f"unexpected dead letter {letter!r}")


def _step(sink: MemorySink, max_keys: int) -> DetectStep:
    key_cap = KeyCap(max_keys, 1) if max_keys else None
    return DetectStep(make_engine(Settings()), sink, _no_dead_letter, metrics=Metrics(), key_cap=key_cap)


def _records(keys: int) -> list[Accepted]:
    """Validated records of a few keys' lives (creations, history, revocations, use after), in event order."""
    ingest = IngestStep(MemorySink(), Topics("requests", "lifecycle"))
    verdicts: list[Accepted | Rejected] = []
    for phase in build(keys):
        for topic, items in (("lifecycle", phase.lifecycle), ("requests", phase.requests)):
            verdicts.extend(ingest.route(topic, k, v) for k, v in items)
    accepted = [v for v in verdicts if isinstance(v, Accepted)]
    assert len(accepted) == len(verdicts)
    return accepted


def _per_key(messages: list[tuple[bytes | None, bytes]]) -> dict[bytes | None, list[bytes]]:
    """The messages of a channel in order, per Kafka key (the order Kafka keeps)."""
    out: dict[bytes | None, list[bytes]] = {}
    for key, value in messages:
        out.setdefault(key, []).append(value)
    return out


def _subject_of(item: Input) -> tuple[bytes, Input]:
    return item.subject.encode(), item


@pytest.mark.parametrize("max_keys", [0, 3])
async def test_one_record_path_equals_the_batched_path(max_keys: int) -> None:
    """Record by record through `detect` or all at once through `detect_batch`: the same alerts and forwards in
    the same order, the same outputs per record and the same table (key cap evictions included)."""
    records = _records(6)
    one_sink, one_store = MemorySink(), dict[bytes, bytes]()
    one = _step(one_sink, max_keys)
    one_outcomes = [await one.detect(a.subject, single(a.tag, a.record), one_store, 0) for a in records]

    batch_sink, batch_store = MemorySink(), dict[bytes, bytes]()
    batch = _step(batch_sink, max_keys)
    items: list[Input] = [a.record for a in records]
    newest = max(ts_ms(a.record.ts) for a in records)
    batch_outcomes = await batch.detect_batch(items, _subject_of, batch_store, 0, newest)

    assert len(one_sink.messages["alerts"]) > 6
    # Every channel carries the same messages in the same order per Kafka key. Only how the alerts of
    # watermark-driven ticks (a key's timer, due while other keys' records arrive) interleave with other keys'
    # alerts differs: record by record the watermark moves after each record, in a batch once at its end.
    for channel in ("alerts", "keyed", "dlq"):
        assert _per_key(batch_sink.messages[channel]) == _per_key(one_sink.messages[channel]), channel
    # (an outcome's state is the key's live state, which the batched path goes on updating, and tick alerts are
    # in the outcome of whichever record moved the watermark: compare the records' own forwards)
    assert [o.forwards for o in batch_outcomes] == [o.forwards for o in one_outcomes if o]
    assert len(batch_outcomes) == len(one_outcomes)
    assert batch_store == one_store
    if max_keys:
        assert len(batch_store) == max_keys


async def test_a_failing_one_record_message_raises_and_writes_no_state() -> None:
    """The one-record path hands a failure to its caller (which dead-letters the message); the table is untouched."""
    sink, store = MemorySink(), dict[bytes, bytes]()
    step = _step(sink, 0)

    def broken(state: object, record: RequestRecord | LifecycleEvent) -> object:
        raise RuntimeError("engine bug")

    step.engine.on_lifecycle = broken  # type: ignore[assignment, method-assign]
    event = LifecycleEvent.model_validate(lifecycle_dict())
    with pytest.raises(RuntimeError, match="engine bug"):
        await step.detect(b"acme/key_live_1", single(b"L", event), store, 0)
    assert store == {}
    assert sink.messages["alerts"] == []


async def test_a_failing_packed_record_is_dead_lettered_under_its_subject() -> None:
    """With a failure handler, a record that fails is handed over with its subject and costs that record only."""
    records = _records(2)
    sink, store = MemorySink(), dict[bytes, bytes]()
    step = _step(sink, 0)
    failures: list[tuple[bytes, str]] = []
    last = records[-1].record
    assert isinstance(last, RequestRecord)

    def read(item: Input) -> tuple[bytes, Input]:
        if isinstance(item, RequestRecord) and item.request_id == last.request_id:
            raise ValueError("unreadable")
        return _subject_of(item)

    async def failed(item: Input, subject: bytes, exc: Exception) -> None:
        failures.append((subject, str(exc)))

    items: list[Input] = [a.record for a in records]
    outcomes = await step.detect_batch(items, read, store, 0, None, failed)
    assert failures == [(b"", "unreadable")]
    assert len(outcomes) == len(records) - 1
    assert set(store) == {a.subject for a in records}


class PartitionSink(MemorySink):
    """A memory sink that also keeps the partition each keyed message was sent to."""

    def __init__(self) -> None:
        super().__init__()
        self.partitions: list[int | None] = []

    async def send(self, channel: Any, key: bytes | None, value: bytes, *, partition: int | None = None) -> None:
        await super().send(channel, key, value)
        if channel == "keyed":
            self.partitions.append(partition)


def _hand_offs(messages: list[tuple[bytes | None, bytes]]) -> dict[str, list[Forward]]:
    """Every hand-off the keyed messages carry, packed or single, in order per subject."""
    out: dict[str, list[Forward]] = {}
    for _, value in messages:
        if value[:1] == TAG_PACKED:
            items = [expand(entry) for entry in unpack(value)]
        else:
            assert value[:1] == TAG_FORWARD
            items = [read_forward(value[1:])]
        for item in items:
            assert isinstance(item, Forward)
            out.setdefault(item.subject, []).append(item)
    return out


def _packed_records(keys: int) -> bytes:
    return pack([orjson.dumps(compact(a.record)) for a in _records(keys)])


def test_a_hand_off_entry_expands_to_the_hand_off() -> None:
    """expand(compact_forward(f)) is f, through JSON; an entry of another length is refused (a dead letter)."""
    fwd = Forward("acme", "", "unused.used", {"key": "key_live_1", "n": [1, 2.5, None]}, 1_767_607_200_123)
    entry = orjson.loads(orjson.dumps(compact_forward(fwd)))
    assert expand(entry) == fwd
    with pytest.raises(ValueError, match="expected 5"):
        expand(entry[:-1])


@pytest.mark.parametrize("partitions", [1, 4])
async def test_hand_offs_of_a_packed_message_go_out_packed_one_message_per_partition(partitions: int) -> None:
    """A packed message's hand-offs: in the same order per subject as the one-record path sends them, packed in
    one message per keyed-topic partition (no key, the partition given) except where an alert sends them early."""
    value = _packed_records(6)
    one_sink = MemorySink()
    one = _step(one_sink, 0)
    await one.detect_batch(
        [expand(e) for e in unpack(value)], _subject_of, dict[bytes, bytes](), 0, None
    )  # one message per hand-off, as before packing
    sink = PartitionSink()
    step = _step(sink, 0)
    cap = KeyCap(1, partitions)
    step.partition_of = cap.partition_of
    assert await step.detect_message(None, value, dict[bytes, bytes](), 0) == len(unpack(value))

    assert _hand_offs(sink.messages["keyed"]) == _hand_offs(one_sink.messages["keyed"])
    sent = len(one_sink.messages["keyed"])
    assert sent > 6
    assert len(sink.messages["keyed"]) < sent / 2
    for (key, message), partition in zip(sink.messages["keyed"], sink.partitions, strict=True):
        assert partition is not None
        if message[:1] == TAG_PACKED:
            assert key is None
            assert {cap.partition_of(f.subject.encode()) for f in map(expand, unpack(message))} == {partition}
        else:
            assert key is not None
            assert cap.partition_of(key) == partition


def test_hand_offs_past_the_packed_size_are_split() -> None:
    """Hand-offs bigger together than a packed message may be go out in several, each within the bound, in order."""
    fwds = [Forward("acme", "", "unused.used", {"key": f"k{n}", "pad": "x" * 5000}, n) for n in range(200)]
    values = _packed(fwds)
    assert len(values) > 1
    assert all(len(v) <= PACKED_MAX_BYTES + 2 for v in values)
    assert [expand(e) for v in values for e in unpack(v)] == fwds


_json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Hand-off envelopes of every shape; a payload is any JSON, or one of a real kind's shape (the fields' values of
# a payload are keywatch's own: checked by the detector that wrote them, not here).
_payload = _json | st.fixed_dictionaries({"key": st.text(max_size=8)})
_hostile_hand_off = st.lists(_json, max_size=7).map(lambda fields: ["F", *fields]) | st.tuples(
    st.just("F"),
    _json | st.integers(min_value=0, max_value=2**62),
    st.sampled_from(["acme", "", "a/b", "t" * 300]) | _json,
    st.text(max_size=8) | _json,
    st.sampled_from(["unused.used", "unused.gone", "environment.used"]) | _json,
    _payload,
).map(list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile=st.lists(_hostile_hand_off, min_size=1, max_size=6), at=st.integers(min_value=0, max_value=6))
def test_hostile_hand_off_entries_cost_only_themselves(hostile: list[list[Any]], at: int) -> None:
    """Packed hand-off entries of any shape (wrong counts, types, kinds, payloads) never fail the message: each is
    applied or dead-lettered alone, and a well-formed hand-off beside them reaches its tenant's state."""
    good = Forward("acme", "", "unused.created", {"key": "key_live_9", "created": 1_767_600_000_000}, 1_767_607_200_000)
    entries = [*hostile[:at], compact_forward(good), *hostile[at:]]
    value = pack([orjson.dumps(e) for e in entries])
    letters: list[bytes | None] = []

    async def dead_letter(topic: str, partition: int, offset: int, key: Any, raw: bytes | None, why: Any) -> None:
        letters.append(raw)

    async def run() -> dict[bytes, bytes]:
        store = dict[bytes, bytes]()
        step = DetectStep(make_engine(Settings()), MemorySink(), dead_letter, metrics=Metrics())
        assert await step.detect_message(None, value, store, 0) == len(entries)
        return store

    store = asyncio.run(run())
    assert b"acme/" in store
    assert "key_live_9" in orjson.dumps(decode_state(store[b"acme/"]).as_plain()).decode()
    assert len(letters) <= len(hostile)
    for raw in letters:
        assert raw is not None
        assert orjson.loads(raw)[0] == "F"


async def test_hand_offs_are_counted_apart_from_input_records() -> None:
    """keywatch_handoffs_processed_total counts the hand-offs detect applied, and nothing else: the keyed
    records detect processed less it are the input records."""
    value = _packed_records(6)
    sink = PartitionSink()
    step = _step(sink, 0)
    store = dict[bytes, bytes]()
    cap = KeyCap(1, 4)
    step.partition_of = cap.partition_of
    records = await step.detect_message(None, value, store, 0)
    handoffs = 0
    while sink.messages["keyed"]:
        key, message = sink.messages["keyed"].pop(0)
        partition = sink.partitions.pop(0)
        assert partition is not None
        handoffs += await step.detect_message(key, message, store, partition)
    assert handoffs > 6
    assert step.metrics.registry.get_sample_value("keywatch_handoffs_processed_total") == handoffs
    assert records == len(_records(6))
