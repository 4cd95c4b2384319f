"""`keywatch simulate --kafka` against the real broker: the same records as the files, keyed by subject."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson

from tests.integration.kafka_helpers import collect

SCENARIO = ["--seed", "3", "--days", "1", "--tenants", "2", "--keys", "4", "--scale", "0.05"]


def _simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keywatch.cli.main", "simulate", *SCENARIO, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_kafka_feed_equals_files(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Every record of the file output arrives on Kafka with key tenant/key_id; per key, in event-time order."""
    _simulate("--out-dir", str(tmp_path))
    want_requests = (tmp_path / "requests.jsonl").read_bytes().splitlines()
    want_lifecycle = (tmp_path / "lifecycle.jsonl").read_bytes().splitlines()
    assert want_requests
    assert want_lifecycle
    prefix = f"simtest-{uuid.uuid4().hex[:8]}"
    topics = {"requests": f"{prefix}.requests", "lifecycle": f"{prefix}.lifecycle"}
    _simulate(
        "--kafka", kafka_bootstrap, "--topic-requests", topics["requests"], "--topic-lifecycle", topics["lifecycle"]
    )
    for kind, want in (("requests", want_requests), ("lifecycle", want_lifecycle)):
        expected = len(want)
        got = await collect(kafka_bootstrap, topics[kind], until=lambda m, n=expected: len(m) >= n)
        assert sorted(v for _, v in got) == sorted(want)
        for key, value in got:
            record = orjson.loads(value)
            assert key == f"{record['tenant']}/{record['key_id']}".encode()
