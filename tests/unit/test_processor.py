"""The ingest and detect steps against an in-memory sink and a dict store: the worker without a broker."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from keywatch.core.codec import decode_state
from keywatch.core.engine import Engine
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.pipeline.wire import TAG_FORWARD, TAG_LIFECYCLE, TAG_REQUEST
from keywatch.sinks.base import MemorySink
from tests.corpus import malformed
from tests.factories import as_bytes, lifecycle_dict, request_dict

NOW = datetime(2026, 1, 5, 12, 5, tzinfo=UTC)


@pytest.fixture
def pipeline() -> tuple[Processor, MemorySink, dict[bytes, bytes]]:
    sink = MemorySink()
    processor = Processor(Engine(source="/test"), sink, Topics(requests="req", lifecycle="life"), clock=lambda: NOW)
    return processor, sink, {}


async def _run_through(processor: Processor, sink: MemorySink, store: dict[bytes, bytes]) -> None:
    """Drain the keyed channel the way the detect agent drains the keyed topic."""
    keyed = sink.messages["keyed"]
    while keyed:
        key, value = keyed.pop(0)
        assert key is not None
        await processor.detect(key, value, store)


async def test_valid_records_are_rekeyed_by_subject(pipeline: tuple[Processor, MemorySink, dict[bytes, bytes]]) -> None:
    """Ingest re-keys requests and lifecycle events to tenant/key_id, whatever the producer's key."""
    processor, sink, _ = pipeline
    await processor.ingest("req", 0, 1, b"producer-key", as_bytes(request_dict()))
    await processor.ingest("life", 2, 7, None, as_bytes(lifecycle_dict()))
    keys = [k for k, _ in sink.messages["keyed"]]
    tags = [v[:1] for _, v in sink.messages["keyed"]]
    assert keys == [b"acme/key_live_1", b"acme/key_live_1"]
    assert tags == [TAG_REQUEST, TAG_LIFECYCLE]
    assert sink.messages["dlq"] == []


async def test_every_malformed_record_is_dead_lettered_intact(
    pipeline: tuple[Processor, MemorySink, dict[bytes, bytes]],
) -> None:
    """Each malformed record lands in the DLQ with its bytes intact, its origin and its reason."""
    processor, sink, _ = pipeline
    corpus = malformed(NOW)
    for offset, bad in enumerate(corpus):
        topic = "req" if bad.kind == "requests" else "life"
        await processor.ingest(topic, 3, offset, b"k", bad.value)
    assert sink.messages["keyed"] == []
    assert len(sink.messages["dlq"]) == len(corpus)
    for (key, value), bad in zip(sink.messages["dlq"], corpus, strict=True):
        letter = orjson.loads(value)
        assert key == b"k"
        assert letter["reason_code"] == bad.code
        assert bad.fragment in letter["reason"]
        assert base64.b64decode(letter["payload_b64"]) == (bad.value or b"")
        assert letter["partition"] == 3
        assert letter["source_topic"] == ("req" if bad.kind == "requests" else "life")


async def test_lifecycle_alerts_and_rotation_forward(
    pipeline: tuple[Processor, MemorySink, dict[bytes, bytes]],
) -> None:
    """created and revoked alerts are emitted keyed by subject; a rotation tells the old key who replaced it."""
    processor, sink, store = pipeline
    events = [
        lifecycle_dict(key_id="k_old"),
        lifecycle_dict(key_id="k_new", replaces_key_id="k_old", ts="2026-01-05T11:30:00Z"),
        lifecycle_dict(type="apiKey.revoked", key_id="k_old", ts="2026-01-05T11:40:00Z"),
    ]
    forwards = 0
    for offset, event in enumerate(events):
        await processor.ingest("life", 0, offset, None, as_bytes(event))
        await processor.detect(*sink.messages["keyed"].pop(0), store)  # type: ignore[arg-type]
        forwards += sum(v[:1] == TAG_FORWARD for _, v in sink.messages["keyed"])
        await _run_through(processor, sink, store)
    assert forwards >= 1
    alerts = [orjson.loads(v) for _, v in sink.messages["alerts"]]
    assert [(a["type"], a["subject"]) for a in alerts] == [
        ("apiKey.created", "acme/k_old"),
        ("apiKey.created", "acme/k_new"),
        ("apiKey.revoked", "acme/k_old"),
    ]
    assert [k for k, _ in sink.messages["alerts"]] == [b"acme/k_old", b"acme/k_new", b"acme/k_old"]
    assert alerts[1]["data"]["evidence"]["rotation"] == {"replaces_key_id": "k_old"}
    assert alerts[2]["data"]["evidence"]["rotation"]["replaced_by"] == "k_new"
    assert decode_state(store[b"acme/k_old"]).registry.status == "revoked"


async def test_reprocessing_gives_same_alert_ids(pipeline: tuple[Processor, MemorySink, dict[bytes, bytes]]) -> None:
    """At-least-once: processing the same lifecycle event twice emits the same alert id twice."""
    processor, sink, store = pipeline
    raw = as_bytes(lifecycle_dict())
    await processor.ingest("life", 0, 0, None, raw)
    await processor.ingest("life", 0, 0, None, raw)
    await _run_through(processor, sink, store)
    ids = [orjson.loads(v)["id"] for _, v in sink.messages["alerts"]]
    assert len(ids) == 2
    assert ids[0] == ids[1]


async def test_unknown_keyed_tag_is_skipped(pipeline: tuple[Processor, MemorySink, dict[bytes, bytes]]) -> None:
    """A keyed message with an unknown tag changes no state and emits nothing."""
    processor, sink, store = pipeline
    assert await processor.detect(b"acme/k", b"Zgarbage", store) is None
    assert store == {}
    assert sink.messages["alerts"] == []
