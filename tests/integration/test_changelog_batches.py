"""TableView's changelog writes (`_send_batches`) against the real broker: split into batches, in order, with
tombstones, the offset of the last record returned, and compressed with the codec asked for (as Kafka's own log
dump tool reads the segments)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from keywatch.kafka_admin import ensure_topics
from keywatch.stream.app import _send_batches
from tests.integration.kafka_helpers import ROOT, read_all, wait_until


async def test_writes_span_several_batches_in_order_and_the_last_offset_is_returned(kafka_bootstrap: str) -> None:
    topic = f"changelog-{uuid.uuid4().hex[:8]}"
    await ensure_topics([kafka_bootstrap], [topic], partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_batch_size=2048)
    await producer.start()
    try:
        writes: dict[bytes, bytes | None] = {f"acme/k{i}".encode(): bytes([65 + i % 26]) * 300 for i in range(20)}
        writes[b"acme/k3"] = None  # a deletion: a tombstone
        last = await _send_batches(producer, topic, 1, writes)  # 20 x ~300 B: several 2 KiB batches
        assert last == 19
        assert await _send_batches(producer, topic, 1, {b"acme/k0": b"again"}) == 20
        # larger than a batch: aiokafka takes it alone in a batch of its own
        big = {b"acme/a": b"a" * 100, b"acme/big": b"x" * 4096, b"acme/b": b"b" * 100}
        assert await _send_batches(producer, topic, 1, big) == 23
    finally:
        await producer.stop()
    records = await read_all(kafka_bootstrap, topic)
    assert records == [*writes.items(), (b"acme/k0", b"again"), *big.items()]  # all in partition 1, in order


def _segments(topic: str, partition: int) -> list[Path]:
    """The broker's log segments of one partition (the broker scripts/kafka-local runs: its KAFKA_HOME)."""
    home = Path(os.environ.get("KEYWATCH_TEST_KAFKA_HOME") or os.environ.get("KAFKA_HOME") or ROOT / ".kafka")
    directory = home / "data" / f"{topic}-{partition}"
    assert directory.is_dir(), f"{directory} is missing: is the test broker's KAFKA_HOME {home}?"
    return sorted(directory.glob("*.log"))


def _dump(segments: list[Path], home_libs: Path) -> list[tuple[int, str]]:
    """(records, codec) of every batch in the segments, as kafka.tools.DumpLogSegments prints them."""
    out = subprocess.run(
        ["java", "-cp", f"{home_libs}/*", "kafka.tools.DumpLogSegments", "--files", ",".join(map(str, segments))],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return [(int(m[1]), m[2]) for m in re.finditer(r"count: (\d+) .*?compresscodec: (\w+)", out.stdout)]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_changelog_batches_are_compressed_with_the_codec_asked_for(kafka_bootstrap: str, codec: str) -> None:
    """States (repetitive, as encoded states are) written with each codec come back byte for byte, every batch on
    the broker's disk carries that codec, and a compressed changelog takes a fraction of the records' bytes."""
    topic = f"changelog-{codec}-{uuid.uuid4().hex[:8]}"
    await ensure_topics([kafka_bootstrap], [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_batch_size=64 * 1024)
    await producer.start()
    try:
        writes: dict[bytes, bytes | None] = {
            f"acme/k{i}".encode(): b"\x9a\x01" + f"[{i},[198,51,100,{i % 250}],{i * 7}]".encode() * 30
            for i in range(400)
        }
        assert await _send_batches(producer, topic, 0, writes, codec) == 399
    finally:
        await producer.stop()
    assert await read_all(kafka_bootstrap, topic) == list(writes.items())
    record_bytes = sum(len(k) + len(v or b"") for k, v in writes.items())
    await wait_until(lambda: sum(p.stat().st_size for p in _segments(topic, 0)) > 0, deadline_s=30, what="segment")
    home = _segments(topic, 0)[0].parents[2]
    batches = _dump(_segments(topic, 0), home / "libs")
    assert sum(n for n, _ in batches) == len(writes)
    assert {c for _, c in batches} == {codec}
    on_disk = sum(p.stat().st_size for p in _segments(topic, 0))
    if codec == "none":
        assert on_disk > record_bytes
    else:
        assert on_disk < record_bytes / 3, (codec, on_disk, record_bytes)
