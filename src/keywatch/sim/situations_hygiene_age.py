"""Situations of issue #13 for the key-age and idleness rules (apiKey.rotationOverdue, apiKey.unused), added to a
planned scenario on keys of their own, deterministic from the seed.

Rotation overdue (in the ordinary tenants; the scenario is days long, so the keys' creation events are dated
before it in the audit log):
- positives: keys created 95-250 days before the start and used from it (at least one past twice the age:
  medium), labelled from their first request (materialised, 1-45 minutes into the scenario); one key that
  reaches the age during the scenario, labelled from that moment. As many as the other types' incidents.
- quiet: a key as old whose rotation has started (its replacement, created with replaces_key_id 1.5-2 days before
  the start, shares its traffic until the old key's last requests 6-12 h into the scenario, then it is revoked);
  a key "older than the logs" (used, its creation is not in the audit log: its age is unknown); keys created
  60-85 days before the start.

Unused (needs more request-log coverage than `idle_days`, so a tenant of its own with a sparse materialised
history that starts 40-60 days before the scenario, 1-4 requests per key per hour from one or two hosts):
- positives: keys whose requests stop 31-45 days before the end (labelled from `idle_days` after their last
  request), a key created before the history starts and never used (labelled from `idle_days` after the
  tenant's first request, rounded up to the hour like the detector's coverage start), a key created during the
  history and never used (from `idle_days` after creation); as many as the other types' incidents;
- quiet: a key idle for 18-25 days in the middle of the history, a weekly batch key (a burst of requests once a
  week), keys in steady use; in the ordinary tenants, keys whose creation is backfilled 35-80 days before the
  start and whose requests begin 1-3 days into it, and one never used (no coverage before the start).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from keywatch.core.rotation_age import RotationAgeConfig
from keywatch.core.unused import UnusedConfig, coverage_start
from keywatch.sim.scenario import (
    DAY_MS,
    ENDPOINTS,
    HOUR_MS,
    MINUTE_MS,
    ROTATION_OVERDUE,
    UNUSED,
    KeyPlan,
    Request,
    Tenant,
)

if TYPE_CHECKING:
    from keywatch.sim.scenario import _Planner

MAX_AGE_MS = int(float(RotationAgeConfig.model_fields["max_age_days"].default) * DAY_MS)
IDLE_MS = int(float(UnusedConfig.model_fields["idle_days"].default) * DAY_MS)
_SPARSE_TENANT = "initrode"


def _live_key(p: _Planner, tenant: Tenant, created: int) -> KeyPlan:
    """A live key of its own, always on, kept free of every other situation."""
    key = p.new_key(tenant, "live", created)
    key.app.schedule = "always"
    key.app.peak_rate = min(max(key.app.peak_rate, 0.5), 3.0)  # a few thousand requests each over the scenario
    key.incident = True
    return key


def overdue_keys(p: _Planner) -> None:
    """Keys past the rotation age and used from a first request early in the scenario (as many as the other
    types' incidents with the next one); one crossing the age during the scenario (positives)."""
    for i in range(max(2, p.c.per_type - 1)):
        days = 185 + p.rng.uniform(0, 65) if i == 0 else p.rng.uniform(95, 175)
        key = _live_key(p, p.rng.choice(p.tenants), p.t0 - int(days * DAY_MS))
        p.created_event(key, key.created_ms)
        # Its first request of the scenario, materialised: traffic starts with it (the label starts there).
        first = p.t0 + p.rng.randrange(MINUTE_MS, 45 * MINUTE_MS)
        host = p.rng.choice(key.app.hosts)
        p.extra.append((key, [p.record(key, first, host.ip, "GET", "/v1/account", 200, 25.0, key.app.agent_at(first))]))
        key.traffic_start_ms = first + 1
        p.add_incident(
            ROTATION_OVERDUE, key, first, p.end,
            f"Key created {days:.0f} days before the logs start, used every day, never rotated"
            + (" (past twice the 90-day age: medium)." if days >= 180 else "."),
        )  # fmt: skip
    span = p.end - p.t0
    crossing = p.t0 + p.rng.randrange(span // 4, max(span // 4 + 1, span - 6 * HOUR_MS))
    key = _live_key(p, p.rng.choice(p.tenants), crossing - MAX_AGE_MS)
    p.created_event(key, key.created_ms)
    p.add_incident(
        ROTATION_OVERDUE, key, crossing, p.end,
        "Key in daily use that reaches the 90-day rotation age during the scenario, never rotated.",
    )  # fmt: skip


def overdue_lookalikes(p: _Planner) -> None:
    """Quiet: an old key whose rotation has started, a key older than the logs, keys younger than the age."""
    old = _live_key(p, p.rng.choice(p.tenants), p.t0 - int(p.rng.uniform(100, 220) * DAY_MS))
    p.created_event(old, old.created_ms)
    created = p.t0 - int(p.rng.uniform(36, 48) * HOUR_MS)
    switch_start = created + p.rng.randint(5, 120) * MINUTE_MS
    switch_end = created + p.rng.randint(30, 60) * HOUR_MS
    new = p.rotate(old, created, switch_start, switch_end, switch_end + p.rng.randint(60, 600) * MINUTE_MS)
    new.incident = True
    p.count("old_keys_rotating")
    # Used from the start; its apiKey.created is older than the audit log (not in it).
    _live_key(p, p.rng.choice(p.tenants), p.t0 - int(p.rng.uniform(120, 400) * DAY_MS))
    p.count("keys_older_than_the_logs")
    for _ in range(2):
        young = _live_key(p, p.rng.choice(p.tenants), p.t0 - int(p.rng.uniform(60, 85) * DAY_MS))
        p.created_event(young, young.created_ms)
        p.count("keys_60_to_85_days_old")


def backfilled_lookalikes(p: _Planner) -> None:
    """Quiet: creations backfilled 35-80 days before the start, requests only from 1-3 days into it (or none):
    the request log starts with the scenario, so no idle time counts before it."""
    for i in range(3):
        key = _live_key(p, p.rng.choice(p.tenants), p.t0 - int(p.rng.uniform(35, 80) * DAY_MS))
        p.created_event(key, key.created_ms)
        if i == 2:
            key.traffic_start_ms = key.traffic_end_ms = p.end  # never used
        else:
            key.traffic_start_ms = p.t0 + p.rng.randrange(DAY_MS, 3 * DAY_MS)
        p.count("backfilled_creations")


def _sparse_tenant(p: _Planner) -> Tenant:
    index = len(p.tenants)
    octet = 200 + index % 50
    nets = [f"10.{octet}.{t}.0/24" for t in p.rng.sample(range(0, 250), 2)]
    tenant = Tenant(
        name=_SPARSE_TENANT if index < 60 else f"{_SPARSE_TENANT}-{index}",
        index=index,
        tz_hours=p.rng.choice((-5.0, 0.0, 1.0)),
        peak_hour=14.0,
        networks=[ipaddress.ip_network(n) for n in nets],
        office_ip=f"10.{octet}.254.{p.rng.randint(2, 250)}",
        actors=[f"{who}@{_SPARSE_TENANT}.example" for who in ("hana", "omar")] + [f"ci-bot@{_SPARSE_TENANT}.example"],
    )
    for net in nets:
        p.networks.append({"network": net, "asn": 64600 + index, "org": f"{tenant.name} (simulated)", "role": "tenant"})
    p.tenants.append(tenant)
    return tenant


def _sparse_records(p: _Planner, key: KeyPlan, start: int, end: int, per_hour: float) -> list[tuple[int, Request]]:
    """Requests of `key` from `start` to `end`: Poisson per hour at `per_hour`, from its hosts, its endpoints."""
    rng, app = p.rng, key.app
    endpoints = ENDPOINTS[app.profile]
    weights = [e[2] for e in endpoints]
    records = []
    hour = start
    while hour < end:
        count = 0
        while rng.random() < per_hour / (per_hour + 1.0):  # geometric, mean per_hour
            count += 1
        for _ in range(count):
            ts = hour + rng.randrange(HOUR_MS)
            if ts >= end:
                continue
            method, template, _, latency = rng.choices(endpoints, weights)[0]
            path = template.split("?", 1)[0]
            for kind in ("cus", "ord", "pay", "inv"):
                path = path.replace("{" + kind + "}", f"{kind}_{rng.getrandbits(40):010x}")
            status = 200 if rng.random() > 0.01 else 404
            host = rng.choice(app.hosts[:2])
            records.append(p.record(key, ts, host.ip, method, path, status, latency * rng.uniform(0.6, 1.8),
                                    app.agent_at(p.t0)))  # fmt: skip
        hour += HOUR_MS
    records.sort(key=lambda r: r[0])
    return records


def unused_tenant(p: _Planner) -> None:
    """A tenant with a sparse request history from 40-60 days before the start: keys that stop (positives),
    never-used keys (positives), an idle gap of 18-25 days, a weekly batch key and steady keys (quiet)."""
    tenant = _sparse_tenant(p)
    history = p.t0 - int(p.rng.uniform(40, 60) * DAY_MS)
    history -= history % MINUTE_MS

    def key_of(created: int) -> KeyPlan:
        key = _live_key(p, tenant, created)
        key.app.hosts = key.app.hosts[:2]
        key.traffic_start_ms = key.traffic_end_ms = p.t0  # every request is materialised here
        p.created_event(key, created)
        return key

    def made(key: KeyPlan, start: int, end: int) -> list[tuple[int, Request]]:
        records = _sparse_records(p, key, start, end, p.rng.uniform(1.0, 4.0))
        p.extra.append((key, records))
        return records

    first = None
    steady = [key_of(history - int(p.rng.uniform(2, 20) * DAY_MS)) for _ in range(2)]
    for key in steady:
        records = made(key, history, p.end)
        first = records[0][0] if first is None else min(first, records[0][0])
    for _ in range(max(2, p.c.per_type - 2)):
        key = key_of(history - int(p.rng.uniform(2, 20) * DAY_MS))
        stop = p.end - int(p.rng.uniform(31, 45) * DAY_MS)
        records = made(key, history, max(stop, history + 2 * DAY_MS))
        if not records:
            continue
        first = min(first or records[0][0], records[0][0])
        last = records[-1][0]
        p.add_incident(
            UNUSED, key, last + IDLE_MS, p.end,
            f"Key used {len(records)} times, last on day {(last - history) / DAY_MS:.0f} of the request log, then "
            "never again: idle for 30 days of coverage.",
        )  # fmt: skip
    idle = key_of(history - int(p.rng.uniform(2, 20) * DAY_MS))
    gap = history + int(p.rng.uniform(5, 10) * DAY_MS)
    made(idle, history, gap)
    made(idle, gap + int(p.rng.uniform(18, 25) * DAY_MS), p.end)
    p.count("keys_idle_18_to_25_days")
    batch = key_of(history - int(p.rng.uniform(2, 20) * DAY_MS))
    runs = []
    at = history + p.rng.randrange(DAY_MS)
    while at < p.end:
        runs += _sparse_records(p, batch, at, at + p.rng.randint(20, 40) * MINUTE_MS, 60.0)
        at += 7 * DAY_MS
    p.extra.append((batch, runs))
    p.count("weekly_batch_keys")
    assert first is not None
    coverage = coverage_start(first)  # the tenant's first request, rounded up to the hour (as the detector)
    before = key_of(history - int(p.rng.uniform(1, 10) * DAY_MS))
    p.add_incident(
        UNUSED, before, coverage + IDLE_MS, p.end,
        "Key created before the request log starts and never used: unused 30 days after the log's first request.",
    )  # fmt: skip
    during = key_of(p.end - int(p.rng.uniform(33, 38) * DAY_MS))
    p.add_incident(
        UNUSED, during, during.created_ms + IDLE_MS, p.end,
        "Key created during the request log and never used: unused 30 days after its creation.",
    )  # fmt: skip


SITUATIONS = (overdue_keys, overdue_lookalikes, backfilled_lookalikes, unused_tenant)
