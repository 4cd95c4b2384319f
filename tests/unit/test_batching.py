"""The batched path (packed keyed messages, coalesced state writes) against the one-record path: same alerts,
same state, fewer writes; and what a bad record costs inside a batch."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from keywatch.config import Settings
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.codec import decode_state
from keywatch.core.engine import Engine
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.keycap import KeyCap
from keywatch.pipeline.processor import Processor
from keywatch.pipeline.wire import PACKED_MAX_BYTES, TAG_PACKED, compact, expand, record_tags
from keywatch.redact import Redactor
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink
from tests.factories import as_bytes, lifecycle_dict, request_dict
from tests.integration.kafka_helpers import build

PARTITIONS = 4
Input = tuple[str, int, int, bytes | None, bytes | None]


class CountingStore(dict[bytes, bytes]):
    """A dict that counts writes (changelog records, in the worker), in all and to tenants' states (`<tenant>/`)."""

    writes = 0
    tenant_writes = 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        if key.endswith(b"/"):
            self.tenant_writes += 1
        super().__setitem__(key, value)


def _processor(sink: MemorySink, max_keys: int = 0, engine: Engine | None = None) -> Processor:
    return Processor(
        engine or make_engine(Settings()),
        sink,
        Topics("requests", "lifecycle"),
        redactor=Redactor(b"k" * 16),
        metrics=Metrics(),
        key_cap=KeyCap(max_keys, PARTITIONS) if max_keys else None,
    )


START = datetime(2026, 11, 20, 17, tzinfo=UTC)  # a fixed hour: the traffic spans the same UTC days on every run


def _inputs(keys: int) -> list[Input]:
    records: list[Input] = []
    for phase in build(keys, start=START):
        for topic, items in (("lifecycle", phase.lifecycle), ("requests", phase.requests)):
            records.extend((topic, 0, len(records), k, v) for k, v in items)
    return records


async def _single(records: list[Input], max_keys: int = 0) -> tuple[MemorySink, CountingStore]:
    sink, store = MemorySink(), CountingStore()
    processor = _processor(sink, max_keys)
    for record in records:
        await processor.ingest(*record)
        while sink.messages["keyed"]:
            key, value = sink.messages["keyed"].pop(0)
            assert key is not None
            await processor.detect(key, value, store)
    return sink, store


class PartitionSink(MemorySink):
    """A memory sink that keeps the partition a keyed message was sent to (in `partitions`, beside `messages`)."""

    def __init__(self) -> None:
        super().__init__()
        self.partitions: list[int | None] = []

    async def send(self, channel: Any, key: bytes | None, value: bytes, *, partition: int | None = None) -> None:
        await super().send(channel, key, value)
        if channel == "keyed":
            self.partitions.append(partition)


async def _batched(
    records: list[Input], size: int, max_keys: int = 0, *, by_partition: bool = False
) -> tuple[PartitionSink, CountingStore]:
    """Ingest's packed batches, then the hand-offs they caused (`by_partition`: packed per partition, as the
    worker sends them; else per subject) until none is left; `sink.sent` counts the hand-off messages."""
    sink, store = PartitionSink(), CountingStore()
    processor = _processor(sink, max_keys)
    cap = KeyCap(1, PARTITIONS)
    if by_partition:
        processor.detect_step.partition_of = cap.partition_of
    for start in range(0, len(records), size):
        out = processor.pack_batch(records[start : start + size], cap.partition_of)
        sink.messages["dlq"].extend((letter.key, letter.value) for letter in out.dead_letters)
        for partition, values in sorted(out.keyed.items()):
            for value in values:
                assert value[:1] == TAG_PACKED
                await processor.detect_message(None, value, store, partition)
        while sink.messages["keyed"]:  # hand-offs
            key, value = sink.messages["keyed"].pop(0)
            sent_to = sink.partitions.pop(0)
            if by_partition:
                assert sent_to is not None
            else:
                assert sent_to is None
                assert key is not None
            if key is not None and sent_to is not None:
                assert cap.partition_of(key) == sent_to
            await processor.detect_message(key, value, store, cap.partition_of(key) if sent_to is None else sent_to)
    return sink, store


def _states(store: dict[bytes, bytes]) -> dict[bytes, dict[str, object]]:
    """The decoded states, compared as values: hand-offs reach a tenant's state in another order on the batched
    path (its maps come out in another order), and a key told its tenant's coverage start after its first
    request rather than before keeps an earlier pending idle tick (the tick then moves to the same deadline)."""
    plain = {}
    for key, raw in store.items():
        state = decode_state(raw).as_plain()
        if "unused" in state["ticks"]:
            state["ticks"] = {**state["ticks"], "unused": "pending"}
        plain[key] = state
    return plain


def _ids(sink: MemorySink, *, tenant_rules: bool = True) -> list[str]:
    alerts = [orjson.loads(v) for _, v in sink.messages["alerts"]]
    if not tenant_rules:
        alerts = [a for a in alerts if (a["data"]["evidence"] or {}).get("phase") != "learning"]
    return sorted(a["id"] for a in alerts)


@pytest.mark.parametrize("by_partition", [False, True])
@pytest.mark.parametrize("size", [1, 37, 5000])
def test_batched_path_emits_the_same_alerts_and_state(size: int, by_partition: bool) -> None:
    """Packed messages of any size, hand-offs packed per subject or per partition: the alert ids and the final
    state of every key equal the one-record path's, with fewer state writes and fewer hand-off messages."""
    records = _inputs(8)
    single_sink, single_store = asyncio.run(_single(records))
    sink, store = asyncio.run(_batched(records, size, by_partition=by_partition))
    assert _ids(sink) == _ids(single_sink)
    assert len(_ids(sink)) > 8
    assert _states(dict(store)) == _states(dict(single_store))
    # every hand-off to the tenant is a message of its own on the one-record path: one write each (how many
    # depends on how many UTC days the traffic spans, one report per range and day: the start is fixed)
    assert single_store.tenant_writes > 0
    if size == 1:  # the hand-offs of one record to its tenant (a range in use, the key in use) still go together
        assert 0 < store.tenant_writes < single_store.tenant_writes
        return
    # coalesced: one write per key per packed message, not one per record; a tenant's hand-offs of a message
    # are packed together (sent early only before an alert): its state is written once per message of them
    key_writes, single_key_writes = (
        store.writes - store.tenant_writes,
        single_store.writes - single_store.tenant_writes,
    )
    assert key_writes < single_key_writes / 5
    # small messages: a tenant hears from most of them, and an alert sends what is pending early
    assert 0 < store.tenant_writes < single_store.tenant_writes * (2 / 3 if size < 100 else 1 / 2)


def test_batched_path_under_the_key_cap_evicts_what_the_single_path_evicts() -> None:
    """With a key cap the batched path keeps and evicts the same keys (eviction per record, in order)."""
    records = _inputs(24)
    single_sink, single_store = asyncio.run(_single(records, max_keys=8))
    sink, store = asyncio.run(_batched(records, 500, max_keys=8))
    # The same keys are kept (their states may differ in what a tenant's evicted and rebuilt state told them).
    assert set(store) == set(single_store)
    assert len(store) <= 8
    # (the tenant's state is capped like a key's: evicted and rebuilt, it may raise its lifecycle burst again,
    # a duplicate with the same id)
    # A tenant's state is capped like a key's: evicted and rebuilt, it forgets its history, and the rules it
    # decides with that history (a learning key on a network new to the tenant) then differ between the paths.
    assert set(_ids(sink, tenant_rules=False)) == set(_ids(single_sink, tenant_rules=False))


def test_rotation_forwards_from_a_packed_message() -> None:
    """A rotation inside a packed message forwards to the old key, which then names its successor."""
    events = [
        lifecycle_dict(key_id="k_old", ts="2026-01-05T09:00:00Z"),
        lifecycle_dict(key_id="k_new", ts="2026-01-05T10:00:00Z", replaces_key_id="k_old"),
        lifecycle_dict(type="apiKey.revoked", key_id="k_old", ts="2026-01-05T10:30:00Z"),
    ]
    records: list[Input] = [("lifecycle", 0, i, None, as_bytes(e)) for i, e in enumerate(events[:2])]
    _, single_store = asyncio.run(_single(records))
    _, store = asyncio.run(_batched(records, 10))
    assert dict(store) == dict(single_store)
    # the revocation comes in a later batch (minutes later in the portal), after the hand-off
    revoke: list[Input] = [("lifecycle", 0, 2, None, as_bytes(events[2]))]
    single_sink2, _ = asyncio.run(_single(records + revoke))
    sink2, _ = asyncio.run(_batched(records + revoke, 2))
    revoked = [orjson.loads(v) for _, v in sink2.messages["alerts"] if b"apiKey.revoked" in v]
    assert revoked
    assert revoked[0]["data"]["evidence"]["rotation"]["replaced_by"] == "k_new"
    assert _ids(sink2) == _ids(single_sink2)


def test_compact_entries_rebuild_the_validated_record() -> None:
    """expand(compact(r)) equals r as the one-record path forwards it (time truncated to the millisecond)."""
    request = RequestRecord.model_validate(request_dict(ts="2026-01-05T12:00:00.123456+02:00", latency_ms=3))
    rebuilt = expand(orjson.loads(orjson.dumps(compact(request))))
    via_json = RequestRecord.model_validate_json(request.model_dump_json(exclude_none=True))
    assert rebuilt == via_json
    assert rebuilt.ts == datetime(2026, 1, 5, 10, 0, 0, 123000, tzinfo=UTC)
    event = LifecycleEvent.model_validate(lifecycle_dict(replaces_key_id="k0", ip=None))
    assert expand(orjson.loads(orjson.dumps(compact(event)))) == event


@pytest.mark.parametrize(
    "record",
    [
        RequestRecord.model_validate(request_dict(user_agent=None, latency_ms=12.5)),
        LifecycleEvent.model_validate(lifecycle_dict(type="apiKey.created", replaces_key_id="k0", ip="10.0.0.1")),
    ],
)
def test_expand_builds_what_model_construct_builds(record: RequestRecord | LifecycleEvent) -> None:
    """expand's shortcut around `model_construct`: the same fields, the same set-fields, the same JSON and dump."""
    entry = orjson.loads(orjson.dumps(compact(record)))
    rebuilt = expand(entry)
    reference = type(record).model_construct(**rebuilt.__dict__)
    assert type(rebuilt) is type(record)
    assert list(rebuilt.__dict__) == list(type(record).model_fields)
    assert rebuilt.model_fields_set == reference.model_fields_set
    assert rebuilt.model_dump_json() == reference.model_dump_json() == record.model_dump_json()
    assert rebuilt.model_dump() == reference.model_dump()
    assert rebuilt.subject == record.subject
    with pytest.raises(ValueError, match="fields, expected"):
        expand(entry[:-1])


def test_pack_batch_dead_letters_bad_records_and_splits_large_partitions() -> None:
    """Bad records become dead letters with their source position; a partition's records split by size."""
    processor = _processor(MemorySink())
    good = [
        ("requests", 1, i, b"k", as_bytes(request_dict(request_id=f"r{i}", path="/" + "x" * 2000))) for i in range(300)
    ]
    bad: Input = ("requests", 2, 77, b"bad", b"{not json")
    out = processor.pack_batch([*good, bad], lambda subject: 3)
    assert out.accepted == 300
    assert len(out.dead_letters) == 1
    letter = orjson.loads(out.dead_letters[0].value)
    assert (out.dead_letters[0].source, out.dead_letters[0].offset) == (("requests", 2), 77)
    assert (letter["source_topic"], letter["partition"], letter["offset"], letter["reason_code"]) == (
        "requests",
        2,
        77,
        "json",
    )
    assert list(out.keyed) == [3]
    assert len(out.keyed[3]) > 1
    assert all(len(v) <= PACKED_MAX_BYTES + 1 for v in out.keyed[3])
    tags = [t for v in out.keyed[3] for t in record_tags(v)]
    assert tags == [b"R"] * 300
    # each packed message says where its records start on their input partition (what a failed send rewinds)
    firsts = [carries[("requests", 1)] for carries in out.keyed_from[3]]
    assert firsts[0] == 0
    assert firsts == sorted(firsts)
    assert len(set(firsts)) == len(out.keyed[3])
    assert (
        processor.metrics.registry.get_sample_value(
            "keywatch_records_total", {"topic": "requests", "outcome": "accepted"}
        )
        == 300
    )


class _Flaky(Engine):
    """Fails on one request id (a bug in a detector, say)."""

    def on_request(self, state: Any, record: RequestRecord) -> Any:
        if record.request_id == "boom":
            state.registry.requests += 1000  # a partial change before failing: must not stick
            raise RuntimeError("detector bug")
        return super().on_request(state, record)


def test_a_failing_record_costs_that_record_only() -> None:
    """A record that raises in detect is dead-lettered; the key's state is as if it never came; others go on."""
    times = [f"2026-01-05T12:00:0{i}Z" for i in range(4)]
    ids = ["a", "boom", "c", "d"]
    records: list[Input] = [
        ("requests", 0, i, None, as_bytes(request_dict(request_id=r, ts=t)))
        for i, (r, t) in enumerate(zip(ids, times, strict=True))
    ]
    clean = [r for r in records if b'"boom"' not in (r[4] or b"")]

    async def run(batch: list[Input]) -> tuple[MemorySink, dict[bytes, bytes]]:
        sink, store = MemorySink(), dict[bytes, bytes]()
        processor = _processor(sink, engine=_Flaky(source="/test"))
        out = processor.pack_batch(batch, lambda subject: 0)
        for value in out.keyed[0]:
            assert await processor.detect_message(None, value, store, 0, offset=9) == len(batch)
        return sink, store

    sink, store = asyncio.run(run(records))
    _, clean_store = asyncio.run(run(clean))
    assert store == clean_store
    assert decode_state(store[b"acme/key_live_1"]).registry.requests == 3
    assert [orjson.loads(v)["reason_code"] for _, v in sink.messages["dlq"]] == ["internal"]


def test_compact_carries_the_browser_headers_and_reads_entries_written_before_them() -> None:
    """The browser headers travel on the keyed topic; an entry without them (as written before they existed,
    or when all are absent) reads back with them absent."""
    browser = RequestRecord.model_validate(
        request_dict(origin="https://app.example", referer="https://app.example/x", sec_fetch_site="cross-site",
                     sec_fetch_mode="cors")
    )  # fmt: skip
    assert expand(orjson.loads(orjson.dumps(compact(browser)))) == browser
    only_mode = RequestRecord.model_validate(request_dict(sec_fetch_mode="navigate"))
    assert expand(orjson.loads(orjson.dumps(compact(only_mode)))) == only_mode
    plain = RequestRecord.model_validate(request_dict())
    entry = compact(plain)
    assert len(entry) == 12  # the entry of before: tag, time and ten fields
    rebuilt = expand(orjson.loads(orjson.dumps(entry)))
    assert rebuilt == plain
    assert (rebuilt.origin, rebuilt.referer, rebuilt.sec_fetch_site, rebuilt.sec_fetch_mode) == (None,) * 4
