"""The detect step (pipeline/detect.py): the one-record path is the batched path with one record, so both give
the same alerts, forwards and state on the same input; a one-record failure raises and writes nothing."""

from __future__ import annotations

import pytest

from keywatch.config import Settings
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import ts_ms
from keywatch.metrics import Metrics
from keywatch.pipeline.detect import DetectStep, Input
from keywatch.pipeline.ingest import Accepted, IngestStep, Rejected, Topics
from keywatch.pipeline.keycap import KeyCap
from keywatch.pipeline.wire import single
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
