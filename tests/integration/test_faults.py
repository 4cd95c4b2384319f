"""Faults against the real broker: a worker killed mid-stream, failover inside a group, the broker going away,
and a flood of distinct keys against the key cap. Each compares what came out with a clean run of the same input.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from keywatch.contract.alerts import Alert
from keywatch.pipeline.keycap import KeyCap
from tests.factories import as_bytes, request_dict
from tests.integration.kafka_helpers import (
    PrivateBroker,
    WorkerProcess,
    alerts_of,
    build,
    collect,
    expected_alerts,
    feed,
    free_port,
    home_ranges,
    http_get,
    keyed_tags,
    produce,
    read_all,
    same_alert,
    summary,
    table_contents,
    wait_caught_up,
    wait_committed,
    wait_until,
)

KEYS = 16
# A dead worker's partitions move after the session timeout: 10 s instead of 60 s keeps the tests short.
FAST = {"KEYWATCH_SESSION_TIMEOUT_SECONDS": "10", "KEYWATCH_REDACTION_KEY": "k" * 16}


def _check_against(expected: dict[str, Alert], got: list[Alert]) -> int:
    """Same set of ids as the clean run, every duplicate identical; returns the number of duplicates."""
    ids = {a.id for a in got}
    missing = [expected[i] for i in expected.keys() - ids]
    extra = [a for a in got if a.id not in expected]
    assert not missing, f"missing {len(missing)} alerts, e.g. {[(a.type, a.subject) for a in missing[:5]]}"
    assert not extra, f"{len(extra)} alerts a clean run does not emit: {summary(extra)}, e.g. {extra[0]}"
    for alert in got:
        assert same_alert(alert, expected[alert.id])
    return len(got) - len(ids)


def _no_alert_for_known_ranges(got: list[Alert]) -> None:
    known = home_ranges(KEYS)
    relearned = [
        a
        for a in got
        if a.type == "apiKey.usedFromNewIp"
        and a.data.status == "firing"  # an episode's end names its network, not a range
        and (a.data.key_id, a.data.evidence["range"]) in known
    ]
    assert relearned == [], f"{len(relearned)} usedFromNewIp alerts for ranges the keys already knew"


async def _all_alerts(worker: WorkerProcess) -> list[Alert]:
    """Every alert once the group has committed the end of the keyed topic (everything is processed)."""
    await wait_caught_up(worker.bootstrap, worker.app_id, worker.topics["keyed"])
    return await alerts_of(worker, until=lambda a: False, deadline_s=1.5)


async def test_sigkill_mid_stream_recovers_state_from_changelog(worker_factory: Callable[..., WorkerProcess]) -> None:
    """A worker SIGKILLed mid-stream and restarted recovers its baselines and emits exactly the clean run's alerts."""
    phases = build(KEYS)
    expected = await expected_alerts(phases)
    # the input calls for new-range alerts in both phases after learning, and used-after-revoke alerts
    assert summary([a for a in expected.values() if a.data.status == "firing"])["apiKey.usedFromNewIp"] == 2 * KEYS
    assert summary(list(expected.values()))["apiKey.usedAfterRevoke"] >= KEYS // 4
    worker = worker_factory(metrics_port=0, extra_env=FAST)
    worker.start()
    await worker.wait_ready()
    await feed(worker, phases[:3])

    # "during": kill as soon as its first alert is out, with the rest in flight and offsets not yet committed.
    before = len(await alerts_of(worker, until=lambda a: False, deadline_s=1.0))
    await produce(worker.bootstrap, worker.topics["requests"], phases[3].requests)
    await alerts_of(worker, until=lambda a: len(a) > before, deadline_s=60)
    worker.kill()
    restarted = time.monotonic()
    worker.start()
    await worker.wait_ready()
    ready_after = time.monotonic() - restarted

    await feed(worker, phases[4:])
    await alerts_of(worker, until=lambda a: expected.keys() <= {x.id for x in a})
    got = await _all_alerts(worker)
    duplicates = _check_against(expected, got)
    _no_alert_for_known_ranges(got)
    print(f"crash: ready {ready_after:.1f}s after restart; {len(got)} alerts, {duplicates} duplicates")


async def test_failover_and_rebalance_match_a_clean_run(worker_factory: Callable[..., WorkerProcess]) -> None:
    """Two workers in a group: one is killed and comes back; the alert ids equal a clean single-worker run."""
    phases = build(KEYS)
    clean = worker_factory(metrics_port=0, extra_env=FAST)
    clean.start()
    await clean.wait_ready()
    await feed(clean, phases)
    clean_alerts = {a.id: a for a in await _all_alerts(clean)}
    clean.stop()
    assert clean_alerts.keys() == (await expected_alerts(phases)).keys()
    upto_during = (await expected_alerts(phases[:4])).keys()

    first = worker_factory(metrics_port=0, extra_env=FAST, name="w1")
    second = worker_factory(app_id=first.app_id, metrics_port=0, extra_env=FAST, name="w2")
    first.start()
    second.start()
    await first.wait_ready()
    await second.wait_ready()
    await feed(first, phases[:3])
    # Kill once both members have committed their progress. Killing a member before its first commit (within
    # ~3 s of being assigned) has left the survivor stalled after the takeover in some runs: a faust issue,
    # see docs/reliability.md "Known gaps".
    # (the input topics are read by the ingest stage, consumer group `<app_id>-ingest`)
    for topic in ("requests", "lifecycle"):
        await wait_caught_up(first.bootstrap, f"{first.app_id}-ingest", first.topics[topic])
    # Every keyed partition committed at least once (the condition that avoids the stall). Not "up to the end":
    # faust can lose the acknowledgement of one message during a rebalance and then never commit that partition
    # further (docs/reliability.md, known gaps); processing goes on, and after a restart the records since the
    # stuck offset are processed again, with the same alert ids, which the set comparison below tolerates.
    await wait_committed(first.bootstrap, first.app_id, first.topics["keyed"])

    killed = time.monotonic()
    second.kill()
    # The survivor takes every partition once the group notices (session timeout), recovers their state from
    # the changelog and goes on: "during" alerts for the keys of all partitions (new-range and used-after-
    # revoke alerts need the learned state) prove it.
    await feed(first, [phases[3]])
    await alerts_of(first, until=lambda a: upto_during <= {x.id for x in a})
    takeover = time.monotonic() - killed
    second.start()
    await second.wait_ready()  # a rebalance again: partitions move back, with their state
    await feed(first, phases[4:])
    await alerts_of(first, until=lambda a: clean_alerts.keys() <= {x.id for x in a})
    got = await _all_alerts(first)
    duplicates = _check_against(clean_alerts, got)
    _no_alert_for_known_ranges(got)
    assert "[^Worker]: Ready" in second.log_since_start()
    print(f"failover: kill to all partitions processed {takeover:.1f}s; {duplicates} duplicates")


async def test_broker_down_at_start_and_lost_mid_stream(tmp_path: Path) -> None:
    """Broker down at start: endpoints up, not ready, backoff; broker lost mid-stream: no record or state lost."""
    broker = PrivateBroker(tmp_path / "kafka")
    worker = WorkerProcess(
        bootstrap=broker.bootstrap, workdir=tmp_path, metrics_port=free_port(), extra_env=FAST, create_inputs=False
    )
    phases = build(KEYS)
    expected = await expected_alerts(phases)
    try:
        worker.start()
        await wait_until(lambda: worker.http("/healthz")[0] == 200, deadline_s=30, what="/healthz")
        status, body = worker.http("/readyz")
        assert status == 503
        assert body["checks"]["broker_reachable"] is False
        await worker.wait_log("not reachable yet (attempt 3: no broker answered); retrying in 2.0s", deadline_s=30)
        assert "retrying in 0.5s" in worker.log_text()
        assert "retrying in 1.0s" in worker.log_text()
        assert worker.http("/readyz")[0] == 503

        broker.start()
        await asyncio.to_thread(worker.create_input_topics)  # the producers' job, once there is a broker
        await worker.wait_ready(deadline_s=120)
        await wait_until(lambda: worker.http("/readyz")[0] == 200, deadline_s=30, what="/readyz 200")
        assert worker.http("/readyz")[1]["checks"]["connected"] is True
        await feed(worker, phases[:3])

        # Lose the broker while "during" is being processed.
        await produce(worker.bootstrap, worker.topics["requests"], phases[3].requests)
        before_outage = len(worker.log_text())
        broker.stop()
        await wait_until(
            lambda: worker.http("/readyz")[1]["checks"]["connected"] is False, deadline_s=30, what="connected false"
        )
        assert worker.proc is not None
        assert worker.proc.poll() is None, "the worker must outlive the broker"
        broker.start()
        await wait_until(lambda: worker.http("/readyz")[0] == 200, deadline_s=120, what="/readyz 200 again")
        outage_log = worker.log_text()[before_outage:].splitlines()
        complaints = [line for line in outage_log if " WARNING " in line or " ERROR " in line]
        # Repeats are folded (keywatch.logs.RepeatFilter): a few lines per kind of failure, not thousands.
        assert len(complaints) < 100, f"{len(complaints)} warning/error lines in the outage:\n" + "\n".join(
            complaints[:40]
        )

        await feed(worker, phases[4:], deadline_s=120)
        await alerts_of(worker, until=lambda a: expected.keys() <= {x.id for x in a}, deadline_s=120)
        got = await _all_alerts(worker)
        _check_against(expected, got)
        _no_alert_for_known_ranges(got)
        assert worker.proc.poll() is None
    finally:
        worker.stop()
        broker.cleanup()


async def test_flood_of_distinct_keys_stays_under_the_key_cap(worker_factory: Callable[..., WorkerProcess]) -> None:
    """A flood of distinct keys and IPs: each record is processed or dead-lettered, the state stays under the cap."""
    cap, partitions, keys, bad = 40, 4, 600, 60
    worker = worker_factory(metrics_port=free_port(), extra_env={"KEYWATCH_MAX_KEYS": str(cap)})
    worker.start()
    await worker.wait_ready()
    records: list[tuple[bytes | None, bytes | None]] = []
    for i in range(keys):
        ip = f"{1 + i % 223}.{i % 256}.{(i * 7) % 256}.{i % 250 + 1}"
        records.append((None, as_bytes(request_dict(key_id=f"flood_{i}", ip=ip, request_id=f"f{i}"))))
        if i % (keys // bad) == 0:
            records.append((f"bad-{i}".encode(), as_bytes(request_dict(key_id=f"flood_bad_{i}", ip="300.1.1.1"))))
    await produce(worker.bootstrap, worker.topics["requests"], records)

    letters = await collect(worker.bootstrap, worker.topics["dlq"], until=lambda m: len(m) >= bad)
    assert len(letters) == bad
    assert {orjson.loads(v)["reason_code"] for _, v in letters} == {"ip"}

    def records(m: list[tuple[bytes | None, bytes | None]]) -> int:  # (not the hand-offs to the tenant's state)
        return sum(tag in (b"R", b"L") for tag in keyed_tags(m))

    keyed = await collect(worker.bootstrap, worker.topics["keyed"], until=lambda m: records(m) >= keys)
    assert records(keyed) == keys
    await wait_caught_up(worker.bootstrap, worker.app_id, worker.topics["keyed"])

    index = KeyCap(cap, partitions)
    per_partition: dict[int, int] = {}
    # the keys and their tenant's state (told of their first uses), capped alike
    subjects = [f"acme/flood_{i}".encode() for i in range(keys)] + [b"acme/"]
    for subject in subjects:
        p = index.partition_of(subject)
        per_partition[p] = per_partition.get(p, 0) + 1
    kept = sum(min(n, index.per_partition) for n in per_partition.values())
    table = table_contents(await read_all(worker.bootstrap, f"{worker.app_id}-keys-changelog"))
    assert len(table) == kept <= cap
    assert worker.metrics_port
    text = http_get(worker.metrics_port, "/metrics")[1]
    evicted = float(re.search(r"^keywatch_keys_evicted_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    # every subject beyond the cap once, and the tenant's state again each time a hand-off recreates it
    assert evicted >= len(subjects) - kept
    assert f"keywatch_keys_max {float(cap)}" in text
    assert worker.proc is not None
    assert worker.proc.poll() is None
    # the DLQ keeps the original bytes of every rejected record
    assert all(base64.b64decode(orjson.loads(v)["payload_b64"]).find(b"300.1.1.1") >= 0 for _, v in letters)
