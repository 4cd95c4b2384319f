"""`keywatch tail` against the real broker: it shows alerts and skips what is not one, never crashing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.kafka_helpers import produce


def _alert(i: int) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"id-{i}",
            "source": "/keywatch",
            "type": "apiKey.created",
            "time": "2026-01-05T11:00:00.000Z",
            "subject": f"acme/k{i}",
            "data": {"tenant": "acme", "key_id": f"k{i}", "severity": "low", "summary": f"created {i}"},
        }
    )


async def _tail(bootstrap: str, topic: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEYWATCH_BOOTSTRAP_SERVERS": bootstrap}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "keywatch.cli.main", "tail", "--topic", topic, "--from-beginning", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_tail_skips_tombstones_and_unreadable_records(kafka_bootstrap: str) -> None:
    """Tombstones, non-JSON, wrong types and non-alerts between alerts: every alert is shown, the rest is skipped
    and counted, exit 0 — also when read again from the beginning."""
    topic = f"kwtail-{uuid.uuid4().hex[:8]}"
    records: list[tuple[bytes | None, bytes | None]] = [
        (b"acme/k0", _alert(0)),
        (b"acme/k0", None),  # a tombstone (compaction of the alert topic, or a producer's delete)
        (b"x", b"\xff\xfe not json"),
        (b"x", b'{"type": 42, "data": []}'),
        (b"x", b"[1, 2, 3]"),
        (b"x", b'{"data": "not an object"}'),
        (b"acme/k1", _alert(1)),
        (None, b""),
        (b"acme/k2", _alert(2)),
    ]
    await produce(kafka_bootstrap, topic, records)
    for _ in range(2):  # a second read from the beginning meets the same records again
        done = await _tail(kafka_bootstrap, topic, "--json", "--max", "3", "--idle-exit", "20")
        assert done.returncode == 0, done.stderr
        assert [orjson.loads(line)["id"] for line in done.stdout.splitlines()] == ["id-0", "id-1", "id-2"]
        assert "Traceback" not in done.stderr
        assert done.stderr.count("skipped the record at") == 5, done.stderr
        assert "skipped 5 record(s) that are not keywatch alerts" in done.stderr
    text = await _tail(kafka_bootstrap, topic, "--no-color", "--max", "3", "--idle-exit", "20")
    assert text.returncode == 0, text.stderr
    assert "from the beginning" in text.stderr
    assert [line.split()[2] for line in text.stdout.splitlines()] == ["apiKey.created"] * 3


async def test_tail_never_creates_the_alert_topic(kafka_bootstrap: str) -> None:
    """Started before the alert topic exists (the broker auto-creates topics): tail waits, says so, exits at
    --idle-exit, and the topic still does not exist (the worker creates it with its own partition count)."""
    topic = f"kwtail-missing-{uuid.uuid4().hex[:8]}"
    done = await _tail(kafka_bootstrap, topic, "--idle-exit", "3")
    assert done.returncode == 0, done.stderr
    assert f"waiting for topic {topic} to exist" in done.stderr
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()
