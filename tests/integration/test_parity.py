"""Replay and the worker on the real broker give the same alerts, with the same ids, for the same input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.events import _parse_ts
from keywatch.replay import replay
from keywatch.runtime import make_engine
from tests.integration.kafka_helpers import WorkerProcess, collect, feed_in_order

# The standard plan: the hygiene situations' parity (ticks, tenant state) is tests/integration/test_hygiene_kafka.py.
SCENARIO = ["--seed", "11", "--days", "3", "--tenants", "2", "--keys", "6", "--scale", "0.3", "--profile", "standard"]


def _simulate(out: Path) -> tuple[list[bytes], list[bytes]]:
    subprocess.run(
        [sys.executable, "-m", "keywatch.cli.main", "simulate", "--out-dir", str(out), *SCENARIO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    requests = (out / "requests.jsonl").read_bytes().splitlines()
    lifecycle = (out / "lifecycle.jsonl").read_bytes().splitlines()
    return requests, lifecycle


def _merged(requests: list[bytes], lifecycle: list[bytes]) -> list[tuple[str, bytes, bytes]]:
    """Both inputs in event-time order (lifecycle first on ties), with their subject as the Kafka key."""
    tagged = []
    for kind, lines in (("lifecycle", lifecycle), ("requests", requests)):
        for line in lines:
            rec = orjson.loads(line)
            ts = _parse_ts(rec["ts"]).timestamp()
            tagged.append(
                (ts, 0 if kind == "lifecycle" else 1, kind, f"{rec['tenant']}/{rec['key_id']}".encode(), line)
            )
    tagged.sort(key=lambda t: (t[0], t[1]))
    return [(kind, key, line) for _, _, kind, key, line in tagged]


async def test_replay_and_worker_emit_the_same_alert_ids(
    worker_factory: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    """The set of alert ids from `keywatch replay` equals the set the worker emits on the real broker."""
    requests, lifecycle = _simulate(tmp_path / "sim")
    offline: list[Alert] = []
    replay(requests, lifecycle, make_engine(Settings()), offline.append)
    expected = {a.id for a in offline}
    assert {a.type for a in offline} >= {
        "apiKey.created",
        "apiKey.revoked",
        "apiKey.usedFromNewIp",
        "apiKey.4xxCluster",
        "apiKey.usedAfterRevoke",
    }, "the scenario must exercise every detector it can"

    worker = worker_factory()
    worker.start()
    await worker.wait_ready()
    # Lifecycle events and requests travel on two topics; keywatch orders per key only within its keyed topic.
    # Feed segment by segment so that every lifecycle event is ingested after the requests before it.
    await feed_in_order(worker, _merged(requests, lifecycle))

    online = await collect(
        worker.bootstrap,
        worker.topics["alerts"],
        until=lambda m: {Alert.model_validate_json(v).id for _, v in m} >= expected,
    )
    got = {Alert.model_validate_json(v).id for _, v in online}
    missing = {(a.type, a.subject, a.time.isoformat()) for a in offline if a.id not in got}
    extra = {
        (a.type, a.subject, a.time.isoformat())
        for a in (Alert.model_validate_json(v) for _, v in online)
        if a.id not in expected
    }
    assert not missing, f"replay alerts the worker did not emit: {sorted(missing)[:10]}"
    assert not extra, f"worker alerts replay did not emit: {sorted(extra)[:10]}"
