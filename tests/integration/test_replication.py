"""KEYWATCH_REPLICATION_FACTOR against real brokers: a factor one broker cannot hold stops the worker with one
line; on a three-node cluster keywatch warns about thin topics, creates its own with three replicas, and goes on
without loss when the broker leading most of its partitions is SIGKILLed mid-stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from keywatch.kafka_admin import check_replication, ensure_topics
from tests.integration.kafka_helpers import (
    KafkaCluster,
    WorkerProcess,
    alerts_of,
    build,
    expected_alerts,
    feed,
    produce,
    summary,
    wait_until,
)
from tests.integration.test_faults import FAST, KEYS, _all_alerts, _check_against, _no_alert_for_known_ranges


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three brokers on loopback for this module's tests, stopped and deleted at the end."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("cluster") / "kafka")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


async def _topics(bootstrap: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    """The partitions (leader, replicas, ...) of every topic whose name starts with `prefix`, from the cluster."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if n.startswith(prefix)]
        return {t["topic"]: t["partitions"] for t in await admin.describe_topics(names)} if names else {}
    finally:
        await admin.close()


async def test_a_factor_above_the_brokers_stops_the_worker_in_one_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    """KEYWATCH_REPLICATION_FACTOR=2 on one broker: exit 1 with one line naming the setting, no traceback."""
    worker = WorkerProcess(
        bootstrap=kafka_bootstrap,
        workdir=tmp_path,
        extra_env={"KEYWATCH_REPLICATION_FACTOR": "2"},
        create_inputs=False,  # "nothing created" below: not even the inputs a producer would create
    )
    worker.start()
    try:
        assert worker.proc is not None
        await wait_until(lambda: worker.proc is not None and worker.proc.poll() is not None, deadline_s=60, what="exit")
        log = worker.log_text()
        assert worker.proc.returncode == 1, log
        (line,) = [x for x in log.splitlines() if x.startswith("Error: ")]
        assert line.startswith(f"Error: KEYWATCH_REPLICATION_FACTOR is 2 but the Kafka cluster at {kafka_bootstrap}")
        assert "has 1 broker, so it cannot create" in line
        assert line.endswith("set the factor to at most 1")
        assert "Traceback" not in log
        assert await _topics(kafka_bootstrap, worker.app_id) == {}, "nothing may be created"
    finally:
        worker.stop()


async def test_warnings_for_a_factor_of_one_and_for_thin_topics(cluster: KafkaCluster) -> None:
    """Factor 1 on three brokers warns; an existing topic with fewer replicas than the factor warns, unaltered."""
    thin = f"thin-{time.monotonic_ns()}"
    bootstrap = cluster.bootstrap.split(",")
    await ensure_topics(bootstrap, [thin], partitions=2, replication=1)
    warnings = await check_replication(bootstrap, [thin], 1)
    assert len(warnings) == 1
    assert warnings[0].startswith("KEYWATCH_REPLICATION_FACTOR is 1 on a cluster of 3 brokers")
    (warning,) = await check_replication(bootstrap, [thin], 3)
    assert warning.startswith(f"topic {thin} has 1 replica, fewer than KEYWATCH_REPLICATION_FACTOR=3")
    partitions = (await _topics(cluster.bootstrap, thin))[thin]
    assert [len(p["replicas"]) for p in partitions] == [1, 1]
    absent = f"absent-{time.monotonic_ns()}"
    assert await check_replication(bootstrap, [thin, absent], 1) == warnings
    assert await _topics(cluster.bootstrap, absent) == {}, "a check must not create the topics it looks for"


async def test_a_broker_of_three_sigkilled_mid_stream_loses_nothing(cluster: KafkaCluster, tmp_path: Path) -> None:
    """RF 3: SIGKILL the broker leading most keyed and changelog partitions mid-stream; alerts equal a clean run's."""
    phases = build(KEYS)
    expected = await expected_alerts(phases)
    worker = WorkerProcess(
        bootstrap=cluster.bootstrap,
        workdir=tmp_path,
        metrics_port=0,
        extra_env={**FAST, "KEYWATCH_REPLICATION_FACTOR": "3"},
    )
    t = worker.topics
    changelog = f"{worker.app_id}-keys-changelog"
    # the input topics are the platform's, not keywatch's: made here as production would have them
    await ensure_topics(cluster.bootstrap.split(","), [t["requests"], t["lifecycle"]], worker.partitions, 3)
    try:
        worker.start()
        await worker.wait_ready(deadline_s=180)
        topics = await _topics(cluster.bootstrap, worker.app_id)
        assert set(topics) == {*t.values(), changelog, f"{worker.app_id}-__assignor-__leader"}
        replicas = {name: [len(p["replicas"]) for p in parts] for name, parts in topics.items()}
        assert all(set(n) == {3} for n in replicas.values()), replicas
        assert "KEYWATCH_REPLICATION_FACTOR" not in worker.log_text(), "no replication warning on this cluster"
        await feed(worker, phases[:3], deadline_s=120)

        # "during": kill once its first alert is out, with the rest in flight
        before = len(await alerts_of(worker, until=lambda a: False, deadline_s=1.0))
        await produce(worker.bootstrap, t["requests"], phases[3].requests)
        await alerts_of(worker, until=lambda a: len(a) > before, deadline_s=60)
        leaders = [p["leader"] for name in (t["keyed"], changelog) for p in topics[name]]
        victim = max(range(1, cluster.nodes + 1), key=leaders.count)
        cluster.kill(victim)

        await feed(worker, phases[4:], deadline_s=180)
        await alerts_of(worker, until=lambda a: expected.keys() <= {x.id for x in a}, deadline_s=180)
        got = await _all_alerts(worker)
        duplicates = _check_against(expected, got)
        _no_alert_for_known_ranges(got)
        assert worker.proc is not None
        assert worker.proc.poll() is None, "the worker must outlive the broker"
        moved = await _topics(cluster.bootstrap, worker.app_id)
        assert victim not in {p["leader"] for name in (t["keyed"], changelog) for p in moved[name]}
        print(
            f"broker {victim} (led {leaders.count(victim)}/{len(leaders)} keyed+changelog partitions) killed; "
            f"{len(got)} alerts {summary(got)}, {duplicates} duplicates"
        )
        cluster.start(victim)  # and back: the node rejoins the cluster
    finally:
        worker.stop()
