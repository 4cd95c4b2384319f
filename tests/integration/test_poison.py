"""Poison records and refused sends on the real broker: nothing stops ingest or detect, nothing is sent twice.

A record too large to dead-letter whole used to stall its input partition forever (the letter exceeded the
producer's max request size, ingest sought back and retried every second) and rewound every other partition of
the fetch with it (duplicate keyed messages, duplicate alerts).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.deadletter import KEY_MAX_BYTES, PAYLOAD_MAX_BYTES, DeadLetter
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.partitioner import partition_of
from keywatch.pipeline.processor import Processor
from keywatch.pipeline.wire import expand
from keywatch.redact import Redactor
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink
from keywatch.stream.app import TableView
from keywatch.stream.delivery import required_message_bytes
from keywatch.stream.ingest import IngestStage
from tests.factories import as_bytes, lifecycle_dict
from tests.integration.kafka_helpers import (
    Phase,
    WorkerProcess,
    collect,
    expected_alerts,
    free_port,
    read_all,
    wait_caught_up,
    wait_until,
)

BIG_TOPIC_BYTES = 8 * 1024 * 1024


async def create_topics(bootstrap: str, topics: dict[str, dict[str, str]], partitions: int = 4) -> None:
    """Create topics with their own configs (the worker must not be the one that creates its input topics)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=configs) for name, configs in topics.items()]
        )
    finally:
        await admin.close()


async def produce_to(bootstrap: str, topic: str, records: Iterable[tuple[int, bytes | None, bytes]]) -> None:
    """Send (partition, key, value) records in order, acknowledged; records up to 8 MiB."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=BIG_TOPIC_BYTES)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v, partition=p) for p, k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A /metrics page as {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(worker: WorkerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's /metrics now."""
    status, text = worker.http("/metrics")
    assert status == 200, text
    return samples(text)


def failures(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[tuple[str, str, str], float]:
    """keywatch_send_failures_total by (channel, reason, action)."""
    out = {}
    for (name, labels), value in metrics.items():
        if name == "keywatch_send_failures_total":
            d = dict(labels)
            out[(d["channel"], d["reason"], d["action"])] = value
    return out


def huge(size: int) -> bytes:
    """A JSON-looking request of `size` bytes (words and blanks, so a cut has somewhere to stop)."""
    head, tail = b'{"type":"apiKey.created","note":"', b'"}'
    body = b"word " * ((size - len(head) - len(tail)) // 5 + 1)
    return head + body[: size - len(head) - len(tail)] + tail


def events(prefix: str, n: int, *, one_actor: bool = True) -> list[bytes]:
    """`n` created events of distinct keys, one created alert each; by one actor (a lifecycle burst besides) or,
    with `one_actor=False`, each by its own (nothing else)."""
    return [
        as_bytes(
            lifecycle_dict(
                key_id=f"{prefix}{i}",
                ts=f"2026-01-05T10:{i % 60:02d}:00Z",
                name=f"svc {i}",
                actor="alice@acme.example" if one_actor else f"admin-{prefix}{i}@acme.example",
            )
        )
        for i in range(n)
    ]


async def test_huge_records_are_dead_lettered_at_once_and_nothing_around_them_stalls_or_repeats(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """A 900 KB and a 5 MB record are dead-lettered within seconds with a prefix, their size and SHA-256; the
    records after them on their partition and on the others flow; the alerts equal a clean run's, none twice."""
    worker = worker_factory(metrics_port=free_port())
    t = worker.topics
    big = {"max.message.bytes": str(BIG_TOPIC_BYTES)}
    await create_topics(worker.bootstrap, {t["lifecycle"]: big, t["requests"]: {}})
    worker.start()
    await worker.wait_ready()

    kb900, mb5 = huge(900 * 1024), huge(5 * 1024 * 1024)
    big_key = b"poison key " * 200  # 2,200 bytes, over the letter's key bound
    # each event by its own actor: bursts of one actor's creations on four partitions are named by the
    # operations the tenant saw first, which differ between the worker and a replay (the burst rule's own tests
    # cover that); here only the poison records' effect is compared
    lanes = {p: events(f"k{p}_", 15, one_actor=False) for p in range(4)}
    records: list[tuple[int, bytes | None, bytes]] = []
    for p, values in lanes.items():
        records.extend((p, None, v) for v in values[:5])
    records.append((0, b"k-900kb", kb900))
    records.extend((0, None, v) for v in lanes[0][5:10])
    records.append((0, big_key, mb5))
    records.extend((p, None, v) for p, values in lanes.items() for v in values[5 if p else 10 :])
    await produce_to(worker.bootstrap, t["lifecycle"], records)

    letters = await collect(worker.bootstrap, t["dlq"], until=lambda m: len(m) >= 2, deadline_s=30)
    assert len(letters) == 2, worker.log_text()[-3000:]
    by_size = {
        DeadLetter.model_validate_json(v).payload_size: (k, DeadLetter.model_validate_json(v)) for k, v in letters
    }
    for original, key in ((kb900, b"k-900kb"), (mb5, big_key)):
        letter_key, letter = by_size[len(original)]
        prefix = base64.b64decode(letter.payload_b64)
        assert letter.reason_code == "oversize"
        assert letter.payload_truncated
        assert original.startswith(prefix)
        assert PAYLOAD_MAX_BYTES - 5 <= len(prefix) <= PAYLOAD_MAX_BYTES  # backed off to the last blank at most
        assert prefix.endswith(b" ")
        assert letter.payload_sha256 == hashlib.sha256(original).hexdigest()
        assert letter.key_size == len(key)
        assert letter.key_b64 is not None
        short_key = base64.b64decode(letter.key_b64)
        assert letter_key == short_key
        assert key.startswith(short_key)
        assert letter.key_truncated == (len(key) > KEY_MAX_BYTES)
        assert len(short_key) <= KEY_MAX_BYTES

    await wait_caught_up(worker.bootstrap, f"{worker.app_id}-ingest", t["lifecycle"], deadline_s=60)
    await wait_caught_up(worker.bootstrap, worker.app_id, t["keyed"], deadline_s=60)
    alerts = [Alert.model_validate_json(v) for _, v in await read_all(worker.bootstrap, t["alerts"]) if v]
    ids = Counter(a.id for a in alerts)
    assert [i for i, n in ids.items() if n > 1] == []
    clean = await expected_alerts([Phase("all", lifecycle=[(None, v) for vs in lanes.values() for v in vs])])
    assert set(ids) == set(clean)

    metrics = scrape(worker)
    assert metrics[("keywatch_dead_letters_total", (("reason", "oversize"),))] == 2
    assert failures(metrics) == {}
    assert worker.http("/readyz")[0] == 200


async def test_an_alert_topic_that_refuses_every_alert_never_stalls_detect(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """An alert topic whose max.message.bytes is below every alert: each alert is dropped and counted once (never
    retried), bad records are still dead-lettered, and every record is processed, its state written."""
    worker = worker_factory(metrics_port=free_port())
    t = worker.topics
    await create_topics(
        worker.bootstrap, {t["lifecycle"]: {}, t["requests"]: {}, t["alerts"]: {"max.message.bytes": "256"}}
    )
    worker.start()
    await worker.wait_ready()

    good = events("ok", 12)
    bad = [b"{not json " + b"x" * 600 for _ in range(3)]
    await produce_to(worker.bootstrap, t["lifecycle"], [(i % 4, None, v) for i, v in enumerate([*good, *bad])])

    await wait_caught_up(worker.bootstrap, f"{worker.app_id}-ingest", t["lifecycle"], deadline_s=60)
    await wait_caught_up(worker.bootstrap, worker.app_id, t["keyed"], deadline_s=60)

    # one created alert per event, and the lifecycle bursts the twelve creations by one actor make
    clean = await expected_alerts([Phase("all", lifecycle=[(None, v) for v in good])])

    async def all_counted() -> bool:
        return failures(scrape(worker)).get(("alerts", "too_large", "dropped")) == len(clean)

    await wait_until(all_counted, deadline_s=30, what="every alert counted as dropped")
    metrics = scrape(worker)
    assert failures(metrics) == {("alerts", "too_large", "dropped"): len(clean)}  # nothing retried
    assert metrics[("keywatch_dead_letters_total", (("reason", "json"),))] == len(bad)
    assert len(await read_all(worker.bootstrap, t["dlq"])) == len(bad)
    assert await read_all(worker.bootstrap, t["alerts"]) == []
    changelog = await read_all(worker.bootstrap, f"{worker.app_id}-keys-changelog")
    # state went on (the keys', and their tenant's, told of the creations)
    assert {k for k, _ in changelog} == {f"acme/ok{i}".encode() for i in range(len(good))} | {b"acme/"}
    assert worker.proc is not None
    assert worker.proc.poll() is None
    assert worker.http("/readyz")[0] == 200


async def test_a_dlq_topic_too_small_for_a_letter_stops_the_worker_at_start(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """A DLQ topic whose max.message.bytes cannot take the largest dead letter is a clear error at start-up
    (exit 1, naming the topic, its limit and what keywatch needs), not letters lost one by one later."""
    worker = worker_factory()
    t = worker.topics
    await create_topics(
        worker.bootstrap, {t["lifecycle"]: {}, t["requests"]: {}, t["dlq"]: {"max.message.bytes": "65536"}}
    )
    worker.start()
    assert worker.proc is not None
    await wait_until(lambda: worker.proc is not None and worker.proc.poll() is not None, deadline_s=60,
                     what="the worker to refuse to start")  # fmt: skip
    assert worker.proc.returncode == 1
    need = required_message_bytes(t["keyed"], t["dlq"])[t["dlq"]]
    assert f"{t['dlq']} has max.message.bytes=65536, keywatch may send it {need} bytes" in worker.log_text()
    assert t["keyed"] not in worker.log_text().split("max.message.bytes=65536")[1]  # the keyed topic is fine


def _subjects_by_partition(partitions: int, per_partition: int) -> dict[int, list[str]]:
    """Key ids whose subject `acme/<key_id>` hashes to each keyed partition."""
    out: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while min(len(v) for v in out.values()) < per_partition:
        key_id = f"rw{i}"
        lane = out[partition_of(f"acme/{key_id}".encode(), partitions)]
        if len(lane) < per_partition:
            lane.append(key_id)
        i += 1
    return out


def _stage(kafka_bootstrap: str, tmp_path: Path) -> tuple[Settings, IngestStage, Metrics]:
    """An ingest stage of its own (topics named after a fresh app id), not started."""
    app_id = f"kwtest-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        app_id=app_id,
        topic_requests=f"{app_id}.requests",
        topic_lifecycle=f"{app_id}.lifecycle",
        topic_dlq=f"{app_id}.dlq",
        data_dir=tmp_path,
        partitions=4,
    )
    metrics = Metrics()
    processor = Processor(
        make_engine(settings),
        MemorySink(),
        Topics(settings.topic_requests, settings.topic_lifecycle),
        redactor=Redactor(b"k" * 16),
        metrics=metrics,
    )
    return settings, IngestStage(settings, processor, metrics, f"{app_id}-keyed"), metrics


def _send_failures(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["channel"], s.labels["reason"], s.labels["action"]): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "keywatch_send_failures_total"
    }


def _key_ids(values: Iterable[bytes | None]) -> list[str]:
    """The key id of every record the packed keyed messages carry."""
    return [expand(entry).key_id for value in values if value for entry in orjson.loads(value[1:])]


async def test_letters_the_dlq_refuses_are_dropped_and_not_counted_as_sent(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The ingest stage on the real broker with a DLQ topic that refuses every letter: each is dropped and
    counted once (never retried, not in keywatch_dead_letters_total), and the valid records go on, once each."""
    settings, stage, metrics = _stage(kafka_bootstrap, tmp_path)
    tiny = {"max.message.bytes": "256"}
    topics = {
        settings.topic_requests: {},
        settings.topic_lifecycle: {},
        stage.keyed_topic: {},
        settings.topic_dlq: tiny,
    }
    await create_topics(kafka_bootstrap, topics)
    good = events("dl", 8)
    bad = [b"{not json " + b"x" * 600 for _ in range(3)]
    await produce_to(kafka_bootstrap, settings.topic_lifecycle, [(i % 4, None, v) for i, v in enumerate(good + bad)])
    task = asyncio.create_task(stage.run())
    try:
        await wait_caught_up(kafka_bootstrap, stage.group, settings.topic_lifecycle, deadline_s=60)
    finally:
        await stage.stop()
        await task
    assert _send_failures(metrics) == {("dlq", "too_large", "dropped"): len(bad)}
    assert metrics.registry.get_sample_value("keywatch_dead_letters_total", {"reason": "json"}) is None
    sent = _key_ids(v for _, v in await read_all(kafka_bootstrap, stage.keyed_topic))
    assert sorted(sent) == sorted(f"dl{i}" for i in range(len(good)))


async def test_a_failed_send_rewinds_only_the_input_partitions_it_carries(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The ingest stage on the real broker, its producer failing once retriably for keyed partition 1 and once
    for good for keyed partition 2: partition 1 is read again and arrives once, partition 2's dropped message is
    counted, and partitions 0 and 3 are sent exactly once (not rewound with the others)."""
    settings, stage, metrics = _stage(kafka_bootstrap, tmp_path)
    keyed = stage.keyed_topic
    await create_topics(kafka_bootstrap, {settings.topic_requests: {}, settings.topic_lifecycle: {}, keyed: {}})
    lanes = _subjects_by_partition(4, 10)
    # input partition p holds the keys of keyed partition p, so a keyed message carries one input partition
    inputs = [
        (p, None, as_bytes(lifecycle_dict(key_id=key_id, ts=f"2026-01-05T10:{j:02d}:00Z")))
        for p, key_ids in lanes.items()
        for j, key_id in enumerate(key_ids)
    ]
    await produce_to(kafka_bootstrap, settings.topic_lifecycle, inputs)

    task = asyncio.create_task(stage.run())
    await asyncio.sleep(0)  # run() has made its producer (not started yet): wrap its send
    producer = stage._producer
    assert producer is not None
    real_send = producer.send
    faults = {1: errors.KafkaTimeoutError(), 2: errors.MessageSizeTooLargeError()}
    dropped: list[bytes] = []

    async def send(topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any) -> Any:
        fault = faults.pop(kw.get("partition") or -1, None) if topic == keyed else None
        if isinstance(fault, errors.KafkaTimeoutError):
            raise fault  # as when the producer's buffer stays full
        if fault is not None:  # as when the broker refuses the batch
            assert value is not None
            dropped.append(value)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(fault)
            return future
        return await real_send(topic, value=value, key=key, **kw)

    producer.send = send
    try:
        await wait_caught_up(kafka_bootstrap, stage.group, settings.topic_lifecycle, deadline_s=60)
    finally:
        await stage.stop()
        await task
    assert faults == {}

    sent = Counter(_key_ids(v for _, v in await read_all(kafka_bootstrap, keyed)))
    assert [k for k, n in sent.items() if n > 1] == []  # nothing sent twice: no partition was rewound needlessly
    lost = set(_key_ids(dropped))
    assert lost
    assert lost <= set(lanes[2])
    assert set(sent) == {k for key_ids_ in lanes.values() for k in key_ids_} - lost
    assert _send_failures(metrics) == {("keyed", "timeout", "retried"): 1, ("keyed", "too_large", "dropped"): 1}


class _Store(dict[bytes, bytes]):
    """The part of a faust table store TableView uses: the data and the persisted changelog offset."""

    persisted: dict[Any, int]

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted = {**getattr(self, "persisted", {}), tp: offset}


class _Table:
    """The part of a faust table TableView uses, over a real changelog topic."""

    def __init__(self, changelog: str) -> None:
        self.data = _Store()
        self.changelog_topic = self
        self._name = changelog

    def get_topic_name(self) -> str:
        return self._name


async def test_a_state_the_changelog_refuses_is_dropped_and_the_others_are_written(kafka_bootstrap: str) -> None:
    """A changelog topic that refuses one state (too large for its max.message.bytes): TableView.flush does not
    retry it forever; it writes the other states one by one, drops and counts that one, and records the offset
    of the last state written."""
    changelog = f"changelog-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, {changelog: {"max.message.bytes": "2048"}}, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    metrics = Metrics()
    table = _Table(changelog)
    view = TableView(table, lambda: producer, metrics)
    try:
        view[b"acme/a"] = b"a" * 100
        view[b"acme/big"] = b"x" * 4096
        view[b"acme/b"] = b"b" * 100
        await asyncio.wait_for(view.flush(0), 60)
    finally:
        await producer.stop()
    assert view.pending == 0
    assert await read_all(kafka_bootstrap, changelog) == [(b"acme/a", b"a" * 100), (b"acme/b", b"b" * 100)]
    assert list(table.data.persisted.values()) == [1]
    assert _send_failures(metrics) == {("changelog", "too_large", "dropped"): 1}
    assert table.data[b"acme/big"] == b"x" * 4096  # still in the local store


async def test_a_batch_of_messages_writes_each_partition_once_with_the_last_state_of_each_key(
    kafka_bootstrap: str,
) -> None:
    """The detect agent's batch: writes selected to two partitions, a key written twice, a deletion; `flush_all`
    sends each partition's writes to its own changelog partition, only the last write of a key, and records the
    persisted offset of each partition."""
    changelog = f"changelog-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka_bootstrap, {changelog: {}}, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    table = _Table(changelog)
    view = TableView(table, lambda: producer, Metrics())
    try:
        view.select(0)
        view[b"acme/a"] = b"first"
        view[b"acme/gone"] = b"x"
        view.select(1)
        view[b"beta/b"] = b"b"
        view.select(0)
        view[b"acme/a"] = b"second"
        assert view.pop(b"acme/gone") == b"x"
        assert view.pending == 3
        assert await asyncio.wait_for(view.flush_all(), 60) == 3
        assert view.pending == 0
        assert await view.flush_all() == 0  # nothing left to send
    finally:
        await producer.stop()
    assert await read_all(kafka_bootstrap, changelog, partition=0) == [(b"acme/a", b"second"), (b"acme/gone", None)]
    assert await read_all(kafka_bootstrap, changelog, partition=1) == [(b"beta/b", b"b")]
    assert sorted((tp.partition, offset) for tp, offset in table.data.persisted.items()) == [(0, 1), (1, 0)]
    assert table.data == {b"acme/a": b"second", b"beta/b": b"b"}
