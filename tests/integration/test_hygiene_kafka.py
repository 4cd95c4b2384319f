"""Key-hygiene rules on the real broker: the tick-driven and tenant-scoped ones give replay's alert ids, and a
worker SIGKILLed before a tick is due, or while ticks are firing, neither loses a tick-driven alert nor repeats
one under a new id."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.core import hygiene
from keywatch.core.engine import Outcome
from keywatch.core.state import KeyRegistryEntry, KeyState
from keywatch.pipeline.partitioner import partition_of
from keywatch.replay import replay
from keywatch.runtime import make_engine
from tests.factories import lifecycle_dict, request_dict
from tests.integration.kafka_helpers import (
    WorkerProcess,
    alerts_of,
    feed_in_order,
    free_port,
    wait_caught_up,
    wait_until,
)
from tests.integration.test_faults import FAST, _check_against

T0 = datetime(2026, 1, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Driven by event-time ticks (the watermark passing a time), not by a record of the key itself.
TICK_TYPES = {
    "apiKey.rotationOverdue",
    "apiKey.rotationStalled",
    "apiKey.revokedWhileInUse",
    "apiKey.unused",
    "apiKey.sharedAcrossServices",
}
# Decided with what the tenant's state knows (facts forwarded by the tenant's keys).
TENANT_TYPES = {"apiKey.lifecycleBurst", "apiKey.environmentMismatch", "apiKey.usedFromNewIp"}


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _event(kind: str, at: datetime, key: str, **fields: Any) -> tuple[datetime, int, str, bytes, bytes]:
    fields = {"channel": "portal", "mfa": True, **fields}
    record = lifecycle_dict(type=kind, ts=_ts(at), key_id=key, name=key, **fields)
    return at, 0, "lifecycle", f"acme/{key}".encode(), orjson.dumps(record)


def _use(at: datetime, key: str, ip: str, n: int, **fields: Any) -> tuple[datetime, int, str, bytes, bytes]:
    record = request_dict(ts=_ts(at), key_id=key, ip=ip, request_id=f"{key}-{n}", **fields)
    return at, 1, "requests", f"acme/{key}".encode(), orjson.dumps(record)


def steady_keys(partitions: int = WorkerProcess.partitions) -> list[str]:
    """Keys that keep the request log going on every keyed partition: the worker runs a partition's ticks when
    that partition's own watermark passes them (replay has one watermark), so every partition needs traffic."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < partitions:
        keys.setdefault(partition_of(f"acme/steady-{i}".encode(), partitions), f"steady-{i}")
        i += 1
    return [keys[p] for p in sorted(keys)]


def hygiene_input() -> list[tuple[str, bytes, bytes]]:
    """One tenant over 32 days of event time, in event-time order (lifecycle first on ties):
    - `old` (live, in use every 10 min from two hosts) is rotated at T0 to `new`, which is never used: the
      rotation stalls at T0 + 24 h (a tick on `old`);
    - `busy` serves every 2 min until it is revoked at T0 + 2 h (a tick at the revocation);
    - `idle` is used until T0 + 1 h, then never again: unused 30 days later (a tick), while one steady key per
      keyed partition keeps the request log going hourly until T0 + 32 d;
    - mallory performs 5 lifecycle operations in 5 minutes at T0 + 3 h (a tenant alert), one of them a key that
      is used from a network new to the tenant while it learns;
    - the sandbox key `sbx` is used from `old`'s live hosts (a production service on a sandbox key);
    - `aged`, created 89 days before T0, is used until T0 + 20 h: rotation overdue at T0 + 1 d (a tick), unused
      30 days after its last request (a tick);
    - `spare`, created before the tenant's request log starts and never used: unused 30 days after the tenant's
      coverage start (the tenant's answer, then a tick);
    - `shared` serves one service every 5 min until T0 + 16 h, and a second service (another product on another
      network) every 5 min from T0 + 14 h to T0 + 15 h 30: shared across services when its third window is
      decided (a tick at the window's end plus the lateness)."""
    rows: list[tuple[datetime, int, str, bytes, bytes]] = []
    for key in ("old", "busy", "idle", *steady_keys()):
        rows.append(_event("apiKey.created", T0 - 3 * DAY, key, role="standard"))
    rows.append(_event("apiKey.created", T0 - 3 * DAY, "sbx", env="sandbox", role="standard"))
    rows.append(_event("apiKey.created", T0, "new", role="standard", replaces_key_id="old"))
    for i in range(int((27 * HOUR + DAY) / timedelta(minutes=10))):
        rows.append(_use(T0 - DAY + i * timedelta(minutes=10), "old", f"192.0.2.{10 + i % 2}", i))
    for i in range(int((DAY + 2 * HOUR) / timedelta(minutes=2))):
        rows.append(_use(T0 - DAY + i * timedelta(minutes=2), "busy", "198.51.100.20", i))
    rows.append(_event("apiKey.revoked", T0 + 2 * HOUR, "busy"))
    for i in range(int((DAY + HOUR) / timedelta(minutes=10))):
        rows.append(_use(T0 - DAY + i * timedelta(minutes=10), "idle", "198.51.100.30", i))
    for key in steady_keys():
        for i in range(33 * 24):
            rows.append(_use(T0 - DAY + i * HOUR + timedelta(minutes=7), key, "198.51.100.40", i))
    burst = T0 + 3 * HOUR
    for j, key in enumerate(("m1", "m2", "m3")):
        rows.append(_event("apiKey.created", burst + j * timedelta(minutes=1), key, actor="mallory@acme.example"))
    rows.append(_event("apiKey.revoked", burst + 3 * timedelta(minutes=1), "m1", actor="mallory@acme.example"))
    rows.append(
        _event(
            "apiKey.scopeChanged", burst + 4 * timedelta(minutes=1), "m2", actor="mallory@acme.example", role="admin"
        )
    )
    for i in range(3):
        rows.append(_use(burst + timedelta(minutes=10 + i), "m3", "203.0.113.50", i))
    for i in range(6):
        rows.append(_use(T0 + 4 * HOUR + i * timedelta(minutes=5), "sbx", "192.0.2.10", i, env="sandbox"))
    rows.append(_event("apiKey.created", T0 - 89 * DAY, "aged", role="standard"))
    for i in range(int((DAY + 20 * HOUR) / timedelta(minutes=10))):
        rows.append(_use(T0 - DAY + i * timedelta(minutes=10), "aged", "198.51.100.50", i))
    rows.append(_event("apiKey.created", T0 - 3 * DAY, "spare", role="standard"))
    rows.append(_event("apiKey.created", T0 - 3 * DAY, "shared", role="standard"))
    for i in range(int((DAY + 16 * HOUR) / timedelta(minutes=5))):
        at = T0 - DAY + i * timedelta(minutes=5)
        rows.append(_use(at, "shared", "198.51.100.60", i, user_agent="billing-sync/1.4"))
    for i in range(18):
        at = T0 + 14 * HOUR + i * timedelta(minutes=5) + timedelta(minutes=1)
        rows.append(_use(at, "shared", "198.18.7.5", 10_000 + i, user_agent="report-job/2.0"))
    rows.sort(key=lambda row: (row[0], row[1]))
    return [(topic, key, value) for _, _, topic, key, value in rows]


def replayed(records: list[tuple[str, bytes, bytes]], states: dict[str, KeyState] | None = None) -> dict[str, Alert]:
    """What `keywatch replay` emits for the same records (and, into `states`, every key's final state)."""
    requests = [value for topic, _, value in records if topic == "requests"]
    lifecycle = [value for topic, _, value in records if topic == "lifecycle"]
    out: list[Alert] = []
    engine = make_engine(Settings())
    if states is not None:

        def keeping(hook: Callable[..., Outcome]) -> Callable[..., Outcome]:
            def keep(*args: Any) -> Outcome:
                outcome = hook(*args)
                states[outcome.state.subject] = outcome.state
                return outcome

            return keep

        for name in ("on_request", "on_lifecycle", "on_forward", "on_tick"):
            setattr(engine, name, keeping(getattr(engine, name)))
    replay(requests, lifecycle, engine, out.append)
    return {a.id: a for a in out}


def hygiene_gauge(text: str) -> dict[str, float]:
    """`keywatch_keys_by_hygiene_status` from a /metrics page, by status; fails on any label but `status`."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "keywatch_keys_by_hygiene_status":
            for sample in family.samples:
                assert set(sample.labels) == {"status"}, sample.labels
                found[sample.labels["status"]] = sample.value
    return found


def test_the_input_calls_for_every_tick_driven_and_tenant_rule() -> None:
    """The scenario is not vacuous: replay finds each tick-driven and tenant-scoped type in it."""
    expected = replayed(hygiene_input())
    types = {a.type for a in expected.values()}
    assert types >= TICK_TYPES | TENANT_TYPES, sorted(types)
    learning = [a for a in expected.values() if a.data.evidence.get("phase") == "learning"]
    assert [a.subject for a in learning] == ["acme/m3"], "the learning key's alert: new to the tenant"
    unused = {a.subject: a.data.evidence["idle_since_what"] for a in expected.values() if a.type == "apiKey.unused"}
    assert unused.get("acme/spare") == "coverage start", unused
    assert {a.subject for a in expected.values() if a.type == "apiKey.rotationOverdue"} == {"acme/aged"}
    assert {a.subject for a in expected.values() if a.type == "apiKey.sharedAcrossServices"} == {"acme/shared"}


async def test_worker_gives_replays_ids_for_tick_driven_and_tenant_rules(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """Fed in order, the worker's alert ids equal replay's, for every type (tick-driven and tenant ones too), and
    its hygiene gauge counts the keys replay's final states put in each status, without key or tenant labels."""
    records = hygiene_input()
    states: dict[str, KeyState] = {}
    expected = replayed(records, states)
    statuses = hygiene.count(
        KeyRegistryEntry(hygiene=hygiene.bits(state)) for state in states.values() if not state.is_tenant
    )
    assert statuses == {"overdue": 1, "unused": 9, "rotation_in_progress": 0, "stalled": 1}, statuses
    worker = worker_factory(metrics_port=free_port(), extra_env=FAST)
    worker.start()
    await worker.wait_ready()
    await feed_in_order(worker, records)
    await wait_caught_up(worker.bootstrap, worker.app_id, worker.topics["keyed"])
    got = await alerts_of(worker, until=lambda a: expected.keys() <= {x.id for x in a})
    _check_against(expected, got)

    def gauge() -> dict[str, float]:
        status, text = worker.http("/metrics")
        return hygiene_gauge(text) if status == 200 else {}

    # the gauges are refreshed from the table every 15 s
    await wait_until(lambda: gauge() == statuses, deadline_s=60.0, what=f"hygiene gauges {statuses}, got {gauge()}")


async def test_a_sigkill_neither_loses_nor_renames_a_tick_driven_alert(
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    """Killed with ticks pending in state (everything committed, none due yet), then killed again just after the
    first tick-driven alert is out (the rest in flight): every tick-driven alert comes out, under replay's id,
    and no alert under another id."""
    records = hygiene_input()
    expected = replayed(records)
    cut_at = T0 + 12 * HOUR
    cut = next(i for i, (_, _, value) in enumerate(records) if orjson.loads(value)["ts"] >= _ts(cut_at))
    # the tick-driven alerts due after the first kill (the revocation's, at T0 + 2 h, comes before it)
    ticked = {a.id for a in expected.values() if a.type in TICK_TYPES and a.time > cut_at}
    assert {expected[i].type for i in ticked} == TICK_TYPES - {"apiKey.revokedWhileInUse"}
    worker = worker_factory(metrics_port=0, extra_env=FAST)
    worker.start()
    await worker.wait_ready()
    await feed_in_order(worker, records[:cut])
    await wait_caught_up(worker.bootstrap, worker.app_id, worker.topics["keyed"])
    before = {a.id for a in await alerts_of(worker, until=lambda a: False, deadline_s=1.0)}
    assert not before & ticked, "a tick-driven alert came before its time"

    worker.kill()  # pending ticks live only in the table: the restarted worker must find them again
    worker.start()
    await worker.wait_ready()
    await feed_in_order(worker, records[cut:])
    await alerts_of(worker, until=lambda a: bool(ticked & {x.id for x in a}))
    worker.kill()  # while the later ticks fire and their offsets are not all committed
    worker.start()
    await worker.wait_ready()
    await wait_caught_up(worker.bootstrap, worker.app_id, worker.topics["keyed"])
    got = await alerts_of(worker, until=lambda a: expected.keys() <= {x.id for x in a})
    duplicates = _check_against(expected, got)
    print(f"tick-driven alerts: {len(ticked)}, duplicates after two kills: {duplicates}")
