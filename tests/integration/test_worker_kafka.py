"""The worker against the real broker: lifecycle alerts end to end, and dead letters for bad input."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent
from keywatch.core.engine import Engine
from tests.corpus import malformed
from tests.factories import as_bytes, lifecycle_dict, request_dict
from tests.integration.kafka_helpers import WorkerProcess, collect, keyed_tags, produce


async def test_lifecycle_events_become_alerts(worker_factory: Callable[..., WorkerProcess]) -> None:
    """Lifecycle events produced by a plain producer come out as alerts with the expected ids, keys and data."""
    worker = worker_factory()
    worker.start()
    await worker.wait_ready()
    events = [
        lifecycle_dict(key_id="k_ci", ts="2026-01-05T09:00:00Z"),
        lifecycle_dict(key_id="k_ci2", ts="2026-01-05T10:00:00Z", replaces_key_id="k_ci", tenant="acme"),
        lifecycle_dict(type="apiKey.scopeChanged", key_id="k_ci2", role="admin", ts="2026-01-05T10:05:00Z"),
        lifecycle_dict(tenant="globex", key_id="k_sbx", env="sandbox", ts="2026-01-05T10:31:00Z"),
        lifecycle_dict(type="apiKey.revoked", key_id="k_ci", ts="2026-01-05T10:30:00Z", actor="bob@acme.example"),
    ]
    # Producers key however they like (here: not at all); keywatch re-keys by tenant/key_id.
    await produce(worker.bootstrap, worker.topics["lifecycle"], [(None, as_bytes(e)) for e in events[:-1]])
    # The revocation comes after the rotation has been processed (in the portal, minutes later).
    # (the re-scope to admin is also a privilegeEscalated: only the lifecycle alerts are compared here)
    lifecycle = (b'"apiKey.created"', b'"apiKey.scopeChanged"', b'"apiKey.revoked"')

    def of_lifecycle(m: list[tuple[bytes | None, bytes | None]]) -> list[tuple[bytes | None, bytes | None]]:
        return [(k, v) for k, v in m if v and any(b'"type":' + t in v for t in lifecycle)]

    await collect(worker.bootstrap, worker.topics["alerts"], until=lambda m: len(of_lifecycle(m)) >= len(events) - 1)
    await produce(worker.bootstrap, worker.topics["lifecycle"], [(b"portal", as_bytes(events[-1]))])

    engine = Engine(source="/keywatch")
    expected = {
        alert.id: alert for e in events for alert in engine.on_lifecycle(None, LifecycleEvent.model_validate(e)).alerts
    }
    everything = await collect(
        worker.bootstrap, worker.topics["alerts"], until=lambda m: len(of_lifecycle(m)) >= len(events)
    )
    got = of_lifecycle(everything)
    assert len(got) == len(events), worker.log_text()[-3000:]
    assert b'"apiKey.privilegeEscalated"' in b"".join(v or b"" for _, v in everything)
    for key, value in got:
        alert = Alert.model_validate_json(value)
        assert alert.id in expected
        assert key == alert.subject.encode()
        want = expected[alert.id]
        assert (alert.type, alert.subject, alert.time, alert.data.severity) == (
            want.type,
            want.subject,
            want.time,
            want.data.severity,
        )
    by_type = {(a.type, a.subject): a for a in (Alert.model_validate_json(v) for _, v in got)}
    assert by_type[("apiKey.created", "acme/k_ci2")].data.evidence["rotation"] == {"replaces_key_id": "k_ci"}
    revoked = by_type[("apiKey.revoked", "acme/k_ci")]
    assert revoked.data.evidence["actor"] == "bob@acme.example"
    assert revoked.data.evidence["rotation"]["replaced_by"] == "k_ci2"
    assert by_type[("apiKey.scopeChanged", "acme/k_ci2")].data.evidence["new_role"] == "admin"
    assert by_type[("apiKey.created", "globex/k_sbx")].data.env == "sandbox"


async def test_malformed_records_go_to_dlq_and_valid_ones_flow(worker_factory: Callable[..., WorkerProcess]) -> None:
    """Every malformed record is dead-lettered with its reason; every valid record around it is processed."""
    worker = worker_factory()
    worker.start()
    await worker.wait_ready()
    corpus = malformed(datetime.now(UTC))
    requests: list[tuple[bytes | None, bytes | None]] = []
    lifecycle: list[tuple[bytes | None, bytes | None]] = []
    good_requests = good_lifecycle = 0
    for i, bad in enumerate(corpus):
        target = requests if bad.kind == "requests" else lifecycle
        target.append((f"bad-{i}".encode(), bad.value))
        if bad.kind == "requests":
            target.append((b"good", as_bytes(request_dict(key_id=f"key_{i}", request_id=f"good-{i}"))))
            good_requests += 1
        else:
            target.append((b"good", as_bytes(lifecycle_dict(key_id=f"key_{i}"))))
            good_lifecycle += 1
    await produce(worker.bootstrap, worker.topics["requests"], requests)
    await produce(worker.bootstrap, worker.topics["lifecycle"], lifecycle)

    letters = await collect(worker.bootstrap, worker.topics["dlq"], until=lambda m: len(m) >= len(corpus))
    assert len(letters) == len(corpus), worker.log_text()[-3000:]
    for key, value in letters:
        letter = orjson.loads(value)
        assert key is not None
        bad = corpus[int(key.decode().removeprefix("bad-"))]
        assert letter["reason_code"] == bad.code, letter["reason"]
        assert bad.fragment in letter["reason"]
        assert base64.b64decode(letter["payload_b64"]) == (bad.value or b"")
        assert letter["source_topic"] == worker.topics[bad.kind]
        assert letter["offset"] >= 0

    # every valid record reached the keyed stage (ingest packs them: one message per partition per batch)
    keyed = await collect(
        worker.bootstrap, worker.topics["keyed"], until=lambda m: len(keyed_tags(m)) >= good_requests + good_lifecycle
    )
    tags = keyed_tags(keyed)
    assert tags.count(b"R") == good_requests
    assert tags.count(b"L") == good_lifecycle
    alerts = await collect(worker.bootstrap, worker.topics["alerts"], until=lambda m: len(m) >= good_lifecycle)
    assert len(alerts) == good_lifecycle
    assert worker.proc is not None
    assert worker.proc.poll() is None, "worker must survive bad input"


async def test_json_logs_cover_every_logger(worker_factory: Callable[..., WorkerProcess]) -> None:
    """KEYWATCH_LOG_FORMAT=json: every line the worker writes, keywatch's, faust's and aiokafka's, is one JSON
    object with time, level, logger and message."""
    worker = worker_factory(extra_env={"KEYWATCH_LOG_FORMAT": "json", "KEYWATCH_LOG_LEVEL": "INFO"})
    worker.start()
    await worker.wait_ready()
    await produce(worker.bootstrap, worker.topics["requests"], [(None, b"not json")])
    await collect(worker.bootstrap, worker.topics["dlq"], until=lambda m: len(m) >= 1)
    worker.stop()
    lines = [line for line in worker.log_text().splitlines() if line.strip()]
    loggers = set()
    for line in lines:
        record = orjson.loads(line)  # raises on a line that is not JSON
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        assert datetime.fromisoformat(record["time"]).tzinfo is not None, line
        loggers.add(record["logger"].split(".")[0])
    assert {"keywatch", "faust"} <= loggers, loggers
