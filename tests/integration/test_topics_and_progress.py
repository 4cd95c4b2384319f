"""Never start blind, and stalls you can see, on the real broker (which runs with auto.create.topics.enable=true).

A missing input topic is named and waited for (or the worker exits), and is never created by keywatch; a real
stall of the detect group (its alert sends failing while the alert topic is gone) turns /readyz and then /healthz
503 and shows in the lag metrics, and both recover once the topic exists again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from keywatch.kafka_admin import ensure_topics
from tests.factories import as_bytes, lifecycle_dict, request_dict
from tests.integration.kafka_helpers import PrivateBroker, WorkerProcess, collect, free_port, produce, wait_until


async def _topics(bootstrap: str, prefix: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t for t in await admin.list_topics() if t.startswith(prefix)}  # all topics: never creates one
    finally:
        await admin.close()


def _samples(worker: WorkerProcess, name: str) -> list[tuple[dict[str, str], float]]:
    status, text = worker.http("/metrics")
    assert status == 200
    return [
        (dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


async def test_a_misspelled_input_topic_is_named_never_created_and_picked_up_once_it_exists(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """With KEYWATCH_TOPIC_REQUESTS misspelled: a log line and /readyz 503 name the topic and the setting, and
    nothing is created meanwhile (not the topic, nor keywatch's own); created by hand, it makes the worker create
    its own topics and become ready, and its records flow."""
    worker = worker_factory(metrics_port=free_port(), create_inputs=False)
    wrong = f"{worker.app_id}.requestz"
    worker.extra_env["KEYWATCH_TOPIC_REQUESTS"] = wrong
    await ensure_topics([worker.bootstrap], [worker.topics["lifecycle"]], worker.partitions)
    worker.start()
    await worker.wait_log(f"input topic {wrong} (KEYWATCH_TOPIC_REQUESTS) does not exist", deadline_s=60)
    status, body = worker.http("/readyz")
    assert status == 503
    assert body["checks"]["input_topics"] is False
    assert body["missing_topics"] == [{"topic": wrong, "setting": "KEYWATCH_TOPIC_REQUESTS"}]
    t = worker.topics
    assert await _topics(worker.bootstrap, worker.app_id) == {t["lifecycle"]}  # the test's own, nothing else

    await ensure_topics([worker.bootstrap], [wrong], worker.partitions)  # what the operator does
    await worker.wait_ready()
    await wait_until(lambda: worker.http("/readyz")[0] == 200, deadline_s=60, what="/readyz 200")
    assert "missing_topics" not in worker.http("/readyz")[1]
    assert {t["alerts"], t["dlq"], t["keyed"], wrong} <= await _topics(worker.bootstrap, worker.app_id)
    await produce(worker.bootstrap, wrong, [(None, as_bytes(request_dict(ip="300.1.1.1")))])
    await produce(worker.bootstrap, t["lifecycle"], [(None, as_bytes(lifecycle_dict(key_id="k_late")))])
    assert len(await collect(worker.bootstrap, t["dlq"], until=lambda m: len(m) >= 1)) == 1
    assert len(await collect(worker.bootstrap, t["alerts"], until=lambda m: len(m) >= 1)) == 1


async def test_an_input_topic_deleted_under_a_running_worker_stays_deleted_and_is_named(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """Deleting an input topic while the worker reads it: /readyz turns 503 naming it, none of the worker's
    requests (consumer, lag measurements) creates it again, and the other topic's records are either ingested or,
    when aiokafka's consumer stays stuck on the deleted partitions (a known gap), shown stalled to the watchdog."""
    worker = worker_factory(metrics_port=free_port(), extra_env={"KEYWATCH_STALL_SECONDS": "4"})
    worker.start()
    await worker.wait_ready()
    await wait_until(lambda: worker.http("/readyz")[0] == 200, deadline_s=60, what="/readyz 200")
    t = worker.topics
    admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([t["lifecycle"]])
    finally:
        await admin.close()

    def named() -> bool:
        status, body = worker.http("/readyz")
        return status == 503 and body.get("missing_topics") == [
            {"topic": t["lifecycle"], "setting": "KEYWATCH_TOPIC_LIFECYCLE"}
        ]

    await wait_until(named, deadline_s=60, what="/readyz naming the deleted topic")
    await produce(worker.bootstrap, t["requests"], [(None, as_bytes(request_dict(ip="300.1.1.1")))])
    ingest_group = f"{worker.app_id}-ingest"

    async def ingested_or_seen_stalled() -> bool:
        letters = await collect(worker.bootstrap, t["dlq"], until=lambda m: len(m) >= 1, deadline_s=1)
        stalled = worker.http("/readyz")[1].get("stalled", [])
        return len(letters) == 1 or any(s["group"] == ingest_group and s["topic"] == t["requests"] for s in stalled)

    await wait_until(ingested_or_seen_stalled, deadline_s=120, what="the request ingested, or its partition stalled")
    assert t["lifecycle"] not in await _topics(worker.bootstrap, worker.app_id)


async def test_with_exit_a_missing_input_topic_stops_the_worker_with_one_line(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """KEYWATCH_MISSING_INPUT_TOPICS=exit: a non-zero exit and one line naming both topics and their settings;
    no topic exists afterwards (neither the inputs nor keywatch's own)."""
    worker = worker_factory(create_inputs=False, extra_env={"KEYWATCH_MISSING_INPUT_TOPICS": "exit"})
    worker.start()
    assert worker.proc is not None
    await wait_until(lambda: worker.proc is not None and worker.proc.poll() is not None, deadline_s=60,
                     what="the worker to exit")  # fmt: skip
    assert worker.proc.returncode != 0
    t = worker.topics
    [line] = [ln for ln in worker.log_text().splitlines() if ln.startswith("Error:")]
    named = f"{t['requests']} (KEYWATCH_TOPIC_REQUESTS), {t['lifecycle']} (KEYWATCH_TOPIC_LIFECYCLE)"
    assert f"input topics {named} do not exist" in line
    assert await _topics(worker.bootstrap, worker.app_id) == set(), "nothing may be created"


async def test_a_real_stall_turns_readyz_then_healthz_503_and_shows_in_the_lag_metrics(tmp_path: Path) -> None:
    """The alert topic is deleted under the worker on a broker that does not auto-create topics: every alert send
    fails with a retriable error and is retried, so the keyed partitions pile up without progress; /readyz is 503
    (progressing, naming them), the lag and stall gauges show it, /healthz is 503 after the watchdog time; once the
    topic exists again, every alert comes out and both endpoints recover."""
    # A send Kafka refuses for good is dropped, never retried (tests/integration/test_poison.py), so only a
    # retriable failure can stall: an unknown topic is one (the producer waits for it, then keywatch retries).
    broker = PrivateBroker(tmp_path / "kafka", extra_env={"KAFKA_AUTO_CREATE_TOPICS": "false"})
    broker.start()
    worker = WorkerProcess(
        bootstrap=broker.bootstrap,
        workdir=tmp_path,
        metrics_port=free_port(),
        extra_env={"KEYWATCH_STALL_SECONDS": "3", "KEYWATCH_WATCHDOG_SECONDS": "8"},
    )
    try:
        worker.start()
        await worker.wait_ready()
        await wait_until(lambda: worker.http("/readyz")[0] == 200, deadline_s=60, what="/readyz 200")
        t, group = worker.topics, worker.app_id
        await produce(worker.bootstrap, t["lifecycle"], [(None, as_bytes(lifecycle_dict(key_id="k_before")))])
        await collect(worker.bootstrap, t["alerts"], until=lambda m: len(m) >= 1)

        admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([t["alerts"]])
        finally:
            await admin.close()
        events = [lifecycle_dict(key_id=f"k_stall_{i}") for i in range(20)]
        await produce(worker.bootstrap, t["lifecycle"], [(None, as_bytes(e)) for e in events])

        def not_progressing() -> bool:
            status, body = worker.http("/readyz")
            return status == 503 and body["checks"].get("progressing") is False

        await wait_until(not_progressing, deadline_s=90, what="/readyz 503 with progressing false")
        body: dict[str, Any] = worker.http("/readyz")[1]
        assert {(s["group"], s["topic"]) for s in body["stalled"]} == {(group, t["keyed"])}
        assert all(s["lag"] > 0 and s["stalled_seconds"] >= 3 for s in body["stalled"])
        [(_, lag)] = [(lb, v) for lb, v in _samples(worker, "keywatch_consumer_lag") if lb["group"] == group]
        assert lag > 0
        stalled = [v for lb, v in _samples(worker, "keywatch_partition_stalled_seconds") if lb["topic"] == t["keyed"]]
        assert max(stalled) >= 3
        assert "is stalled" in worker.log_since_start()
        await wait_until(lambda: worker.http("/healthz")[0] == 503, deadline_s=60, what="/healthz 503 (watchdog)")
        assert worker.http("/healthz")[1]["watchdog"][0]["topic"] == t["keyed"]

        await ensure_topics([worker.bootstrap], [t["alerts"]], worker.partitions)
        got = await collect(worker.bootstrap, t["alerts"], until=lambda m: len(m) >= len(events), deadline_s=120)
        assert {orjson.loads(v)["data"]["key_id"] for _, v in got} >= {e["key_id"] for e in events}
        await wait_until(lambda: worker.http("/readyz")[0] == 200, deadline_s=60, what="/readyz 200 again")
        await wait_until(lambda: worker.http("/healthz")[0] == 200, deadline_s=60, what="/healthz 200 again")
        [(_, lag)] = [(lb, v) for lb, v in _samples(worker, "keywatch_consumer_lag") if lb["group"] == group]
        assert lag == 0
    finally:
        worker.stop()
        broker.cleanup()
