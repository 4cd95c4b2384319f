"""The bench's own broker (scripts/kafka-local on another port and home) and plain aiokafka clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

ROOT = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = ROOT / "scripts" / "kafka-local"


@dataclass
class Broker:
    """A kafka-local instance of the bench's own (never the test broker on 19092)."""

    port: int
    home: Path
    heap: str = "1g"

    @property
    def bootstrap(self) -> str:
        """host:port for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        """Its log.dirs (scripts/kafka-local puts them in KAFKA_HOME/data)."""
        return self.home / "data"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_HOME": str(self.home),
            "KAFKA_HEAP": self.heap,
            "PYTHON": str(ROOT / ".venv" / "bin" / "python"),
        }

    def start(self) -> None:
        """Start it (fresh data each run), reusing the jars of the repo's broker if it has them."""
        libs, theirs = self.home / "libs", ROOT / ".kafka" / "libs"
        if not libs.exists() and (theirs / ".resolved").exists():
            self.home.mkdir(parents=True, exist_ok=True)
            shutil.copytree(theirs, libs)  # saves a Maven resolve
        subprocess.run([str(KAFKA_LOCAL), "reset"], env=self._env(), check=True, capture_output=True)
        subprocess.run([str(KAFKA_LOCAL), "start"], env=self._env(), check=True)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after the script's timeout) and delete its data (GBs at full size)."""
        subprocess.run([str(KAFKA_LOCAL), "reset"], env=self._env(), check=False)


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create a topic (no-op if it exists)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


def partition_of(key: bytes, partitions: int) -> int:
    """The bench's own partitioner for the fill (keywatch and the peer re-key anyway)."""
    return zlib.crc32(key) % partitions


async def fill(bootstrap: str, topic: str, keys: Sequence[bytes], values: Sequence[bytes], partitions: int) -> float:
    """Produce every record as fast as possible (pre-built batches per partition, acks=1); return seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=50, max_batch_size=512 * 1024, max_request_size=2 << 20
    )
    await producer.start()
    started = time.perf_counter()
    try:
        by_part: list[list[int]] = [[] for _ in range(partitions)]
        for i, key in enumerate(keys):
            by_part[partition_of(key, partitions)].append(i)
        pending: list[asyncio.Future[object]] = []

        async def one_partition(part: int) -> None:
            batch = producer.create_batch()
            for i in by_part[part]:
                if batch.append(key=keys[i], value=values[i], timestamp=None) is None:
                    batch.close()
                    pending.append(await producer.send_batch(batch, topic, partition=part))
                    batch = producer.create_batch()
                    batch.append(key=keys[i], value=values[i], timestamp=None)
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=part))

        await asyncio.gather(*(one_partition(p) for p in range(partitions)))
        await producer.flush()
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def _reader(bootstrap: str) -> AIOKafkaConsumer:
    """A consumer without a group that reads from the beginning in large fetches (the caller assigns it)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
    )


async def ceiling(bootstrap: str, topic: str, records: int, partitions: int) -> tuple[float, float]:
    """Read and orjson-decode `records` records with a plain consumer; (seconds from first record, from start)."""
    consumer = _reader(bootstrap)
    started = time.perf_counter()
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen = 0
        first = 0.0
        loads = orjson.loads
        while seen < records:
            batch = await consumer.getmany(timeout_ms=500, max_records=20000)
            for messages in batch.values():
                if not first and messages:
                    first = time.perf_counter()
                for m in messages:
                    loads(m.value)
                seen += len(messages)
        done = time.perf_counter()
        return done - first, done - started
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Changelog:
    """What a worker wrote to its changelog topics: records, their key+value bytes, and the broker's log bytes.

    `offsets` (the end offsets' sum) counts every record written; `records` those still there to read. They
    differ only if the log cleaner compacted a closed segment (1 GiB by default) before the reading.
    """

    topics: tuple[str, ...]
    offsets: int
    records: int
    record_bytes: int
    largest_record_bytes: int
    disk_bytes: int


async def changelog_partitions(bootstrap: str, app_id: str) -> list[TopicPartition]:
    """Every partition of an app's changelog topics: faust names them `<app_id>-<table>-changelog`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(f"{app_id}-") and t.endswith("-changelog"))
        described = await admin.describe_topics(names) if names else []
    finally:
        await admin.close()
    return [TopicPartition(d["topic"], p) for d in described for p in range(len(d["partitions"]))]


def disk_bytes(data_dir: Path, topic: str) -> int:
    """Sum of the topic's log segment files in the broker's data directory (batch headers and compression
    included; the indexes are not). aiokafka's admin client has no DescribeLogDirs, and the broker is ours."""
    return sum(f.stat().st_size for f in data_dir.glob(f"{topic}-[0-9]*/*.log"))


async def changelog(bootstrap: str, app_id: str, data_dir: Path) -> Changelog:
    """Read an app's changelog topics to their end offsets; sum key and value sizes (tombstones count their key)."""
    parts = await changelog_partitions(bootstrap, app_id)
    topics = sorted({tp.topic for tp in parts})
    consumer = _reader(bootstrap)
    await consumer.start()
    records = size = offsets = largest = 0
    try:
        if parts:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = {tp: end for tp, end in (await consumer.end_offsets(parts)).items() if end > 0}
            offsets = sum(ends.values())
            while ends:
                batch = await consumer.getmany(*ends, timeout_ms=500, max_records=20000)
                for messages in batch.values():
                    for m in messages:
                        one = len(m.key or b"") + len(m.value or b"")
                        size += one
                        largest = max(largest, one)
                    records += len(messages)
                for tp in list(ends):
                    # the position, not the last offset read: compaction leaves gaps before the end
                    if await consumer.position(tp) >= ends[tp]:
                        del ends[tp]
    finally:
        await consumer.stop()
    return Changelog(tuple(topics), offsets, records, size, largest, sum(disk_bytes(data_dir, t) for t in topics))
