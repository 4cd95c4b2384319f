"""The worker on the real broker, fed records up to 30 s out of event-time order over several partitions, against
`keywatch replay` over the sorted records.

What holds exactly: every alert id of every type. apiKey.usedFromNewIp's id names the network and the
suppression window it fires in, not the request: a worker that gets a later request of the network first (the
first one is up to 30 s late) fires on that one, with the same id and a time at most 30 s later;
docs/alerts.md, "Late and out-of-order records".
"""

from __future__ import annotations

from collections.abc import Callable

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.replay import replay
from keywatch.runtime import make_engine
from keywatch.sim.generator import iter_events
from keywatch.sim.scenario import ScenarioConfig, build_plan
from tests.integration.kafka_helpers import WorkerProcess, collect, feed_in_order

CONFIG = ScenarioConfig(seed=11, days=3, tenants=2, keys=6, scale=0.3)
DISORDER_MS = 30_000
NEW_IP = "apiKey.usedFromNewIp"


async def test_worker_on_records_30_s_out_of_order_gives_the_sorted_replay_alerts(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """Up to 30 s of disorder over 4 partitions: the same ids but for new-IP alerts, which are the same (key,
    range) pairs at most 30 s later."""
    plan = build_plan(CONFIG)
    ordered = list(iter_events(plan))
    offline: list[Alert] = []
    replay(
        [value for _, kind, _, value in ordered if kind == "request"],
        [value for _, kind, _, value in ordered if kind == "lifecycle"],
        make_engine(Settings()),
        offline.append,
    )
    expected = {a.id for a in offline}
    exact_ids = expected
    assert {"apiKey.usedFromNewIp", "apiKey.4xxCluster", "apiKey.usedAfterRevoke"} <= {a.type for a in offline}

    delivered = list(iter_events(plan, disorder_ms=DISORDER_MS))
    newest, worst = 0, 0
    for ts, *_ in delivered:
        worst, newest = max(worst, newest - ts), max(newest, ts)
    assert 20_000 < worst <= DISORDER_MS

    worker = worker_factory()
    assert worker.partitions > 1
    worker.start()
    await worker.wait_ready()
    # Two input topics: feed in runs of one kind, each ingested before the next, so the order across the topics
    # is the delivered order (the disorder is the simulator's, not the topics' race).
    await feed_in_order(
        worker,
        (
            ("requests" if kind == "request" else "lifecycle", subject.encode(), value)
            for _, kind, subject, value in delivered
        ),
    )

    online = await collect(
        worker.bootstrap,
        worker.topics["alerts"],
        until=lambda m: (
            {Alert.model_validate_json(v).id for _, v in m} >= exact_ids
            and len({Alert.model_validate_json(v).id for _, v in m}) >= len(expected)
        ),
    )
    alerts = [Alert.model_validate_json(v) for _, v in online]
    got = {a.id for a in alerts}
    exact = offline
    missing = sorted((a.type, a.subject, a.time.isoformat()) for a in exact if a.id not in got)
    extra = sorted({(a.type, a.subject, a.time.isoformat()) for a in alerts if a.id not in expected})
    report = f"{len(exact)} expected, {len(missing)} missing: {missing[:10]}; {len(extra)} extra: {extra[:10]}"
    assert not missing, report
    assert not extra, report

    want_new = {a.id: a.time.timestamp() for a in offline if a.type == NEW_IP}
    assert want_new, "the scenario must raise new-IP alerts"
    for a in alerts:
        if a.id in want_new:
            assert 0 <= a.time.timestamp() - want_new[a.id] <= DISORDER_MS / 1000, (a.id, a.time)
