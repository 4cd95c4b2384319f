"""Situations of issue #13 for the shared-key rule (apiKey.sharedAcrossServices), added to a planned scenario.

Each situation runs after the default plan, on keys of its own, deterministic from the seed. Rates are absolute
(whatever `--scale`). Networks outside the tenants' own 10.<tenant>.0.0/16 are simulated cloud providers,
one /16 (one ASN) each in 100.112.0.0/12.

Positives (labelled `apiKey.sharedAcrossServices` from the first moment the rule may alert, by its own
definition and defaults: the decision (window end plus the allowed lateness) of the third 30-minute window,
after the key's first day, in which the second workload made 5 requests; the key's own service is busy enough
to be active in every window. To one hour after the last shared request):
- two services on one key from the start: a backend (its client app, in one cloud or in the tenant's
  network) and a reporting job elsewhere with `python-requests`, active together 14-20 h a day;
- a key copied to a third-party integration after the learning period: a SaaS poller every 1-4 minutes from
  a cloud network, beside the key's own service. Its first request is also a new network for the key, so it
  carries an `apiKey.usedFromNewIp` label too (at that request).
Look-alikes (unlabelled: they count against precision if they fire):
- a rotation overlap: old and new key used by one service for about a day;
- autoscaling: one service on dozens of addresses in the networks it already uses;
- an SDK upgrade rolled out over hours: two versions of one product side by side;
- a migration to another network once (a standby network the key already knew), overlapping 1-2 h;
- a sidecar: a second product on the same hosts (one network);
- a nightly job on another network and product, never in the same 30-minute window as the daytime service.
"""

from __future__ import annotations

import ipaddress
import math
from typing import TYPE_CHECKING

from keywatch.core.config import DetectionConfig
from keywatch.core.sharing import SharingConfig
from keywatch.sim.scenario import (
    DAY_MS,
    ENDPOINTS,
    HOUR_MS,
    MINUTE_MS,
    NEW_IP,
    SHARED,
    Host,
    Incident,
    KeyPlan,
    Request,
)
from keywatch.sim.situations_rate import Situation

if TYPE_CHECKING:
    from collections.abc import Callable

    from keywatch.sim.scenario import _Planner

_RULE = SharingConfig.model_fields
WINDOW_MS = int(_RULE["window_minutes"].default) * MINUTE_MS
MIN_REQUESTS = int(_RULE["min_requests"].default)
MIN_WINDOWS = int(_RULE["min_windows"].default)
LATENESS_MS = int(DetectionConfig.model_fields["allowed_lateness_seconds"].default * 1000)
CLOUD_FIRST = 112  # simulated cloud providers: 100.112.0.0/16 .. 100.127.0.0/16
CLOUDS = 16
LABEL_TAIL_MS = HOUR_MS  # a window is decided after its end plus the lateness: labels reach this far past
LEARNING_MS = DAY_MS  # the rule's default learning period
_REPORTING_AGENTS = ("python-requests/2.31.0", "python-requests/2.28.2", "python-httpx/0.27.0")
_BACKEND_AGENTS = ("okhttp/4.12.0", "Go-http-client/2.0", "Java/17.0.9", "axios/1.6.7")
_INTEGRATION_AGENTS = ("Zapier/1.0", "node-fetch/3.3.2", "n8n/1.30.1", "Make-Integromat/2.0", "Workato/5.1")
_SIDECARS = ("envoy/1.28.0", "Go-http-client/1.1", "prometheus-exporter/0.9")


def _positives(p: _Planner) -> int:
    return max(2, p.c.per_type // 2)


def _lookalikes(p: _Planner) -> int:
    return max(2, p.c.per_type // 4)


def _key(p: _Planner, rate: float, trough: float) -> KeyPlan:
    """A live key of its own, existing before the window, always on, `rate` requests/min at its peak."""
    tenant = p.rng.choice(p.tenants)
    key = p.new_key(tenant, "live", p.t0)
    app = key.app
    app.peak_rate, app.trough, app.schedule = rate / p.c.scale, trough, "always"
    key.incident = True  # no benign change or other incident on it
    p.created_event(key, p.t0)
    return key


def _rate(p: _Planner, low: float, high: float) -> float:
    return float(low * (high / low) ** p.rng.random())


def _cloud(p: _Planner, avoid: int | None = None) -> tuple[int, ipaddress.IPv4Network]:
    """A /24 of a simulated cloud provider (registered in the plan's networks), not of provider `avoid`."""
    rng = p.rng
    j = rng.choice([c for c in range(CLOUDS) if c != avoid])
    net = ipaddress.IPv4Network(f"100.{CLOUD_FIRST + j}.{rng.randrange(256)}.0/24")
    sixteen = f"100.{CLOUD_FIRST + j}.0.0/16"
    if all(n["network"] != sixteen for n in p.networks):
        p.networks.append(
            {"network": sixteen, "asn": 64700 + j, "org": f"cloud provider {j} (simulated)", "role": "cloud"}
        )
    return j, net


def _ips(p: _Planner, net: ipaddress.IPv4Network, n: int) -> list[str]:
    used: set[str] = set()
    return [p.host(net, used, 0, 0).ip for _ in range(n)]


def _stream(
    p: _Planner,
    key: KeyPlan,
    start: int,
    end: int,
    per_minute: float,
    ips: list[str],
    agent: str | Callable[[int], str],
    active: Callable[[int], bool] | None = None,
) -> list[tuple[int, Request]]:
    """Requests of one workload of `key` in [start, end): `per_minute` on average with a daily swing of +-40%
    (peaking with the tenant's day), only while `active(ts)`."""
    rng = p.rng
    out: list[tuple[int, Request]] = []
    endpoints = ENDPOINTS[key.app.profile]
    weights = [e[2] for e in endpoints]
    tz, peak = key.tenant.tz_hours, key.tenant.peak_hour
    ts = start
    while True:
        local_h = (ts / HOUR_MS + tz) % 24.0
        rate = per_minute * (1.0 + 0.4 * math.cos(2 * math.pi * (local_h - peak) / 24.0))
        ts += int(rng.expovariate(rate / MINUTE_MS)) + 1
        if ts >= end:
            return out
        if active is not None and not active(ts):
            continue
        method, template, _, median = rng.choices(endpoints, weights=weights)[0]
        path = template.replace("{", "").replace("}", "_" + f"{rng.getrandbits(24):06x}")
        status = 200 if rng.random() > 0.01 else 404
        name = agent(ts) if callable(agent) else agent
        out.append(p.record(key, ts, rng.choice(ips), method, path, status, median * rng.uniform(0.5, 2.0), name))


def _label(
    p: _Planner, kind: str, key: KeyPlan, start: int, end: int, text: str, records: list[tuple[int, Request]]
) -> None:
    slug = "shared" if kind == SHARED else "shared-newip"
    number = sum(1 for i in p.incidents if i.id.startswith(f"inc-{slug}-")) + 1
    p.incidents.append(
        Incident(
            id=f"inc-{slug}-{number:03d}",
            type=kind,
            key=key,
            start_ms=start,
            end_ms=end,
            description=text,
            records=records,
        )
    )


def first_due(records: list[tuple[int, Request]], after_ms: int) -> int | None:
    """When the rule may first alert on a workload made of `records` beside an always-active one: the decision
    time of the `MIN_WINDOWS`-th window from `after_ms` on in which the records reach `MIN_REQUESTS`."""
    counts: dict[int, int] = {}
    for ts, _ in records:
        if ts >= after_ms:
            counts[ts // WINDOW_MS] = counts.get(ts // WINDOW_MS, 0) + 1
    active = sorted(index for index, n in counts.items() if n >= MIN_REQUESTS)
    if len(active) < MIN_WINDOWS:
        return None
    return (active[MIN_WINDOWS - 1] + 1) * WINDOW_MS + LATENESS_MS


def shared_due(p: _Planner, key: KeyPlan, records: list[tuple[int, Request]]) -> int | None:
    """`first_due` of `records` beside `key`'s own service, or None unless that service is expected to be
    active (twice `MIN_REQUESTS` on average) in `MIN_WINDOWS` of the windows where `records` are, within a day
    (for workloads beside an ordinary key, whose own rate may be too low to count)."""
    due = first_due(records, key.traffic_start_ms + LEARNING_MS)
    if due is None:
        return None
    counts: dict[int, int] = {}
    for ts, _ in records:
        counts[ts // WINDOW_MS] = counts.get(ts // WINDOW_MS, 0) + 1
    busy = sorted(
        index
        for index, n in counts.items()
        if n >= MIN_REQUESTS
        and index * WINDOW_MS >= key.traffic_start_ms + LEARNING_MS
        and key.normal_rate(index * WINDOW_MS + WINDOW_MS // 2, p.c.scale) * WINDOW_MS / MINUTE_MS >= 2 * MIN_REQUESTS
    )
    if any(busy[i + MIN_WINDOWS - 1] - busy[i] < DAY_MS // WINDOW_MS for i in range(len(busy) - MIN_WINDOWS + 1)):
        return due
    return None


def _daily(p: _Planner, key: KeyPlan, from_h: float, hours: float) -> Callable[[int], bool]:
    """Active `hours` a day from `from_h` local time."""
    tz = key.tenant.tz_hours

    def active(ts: int) -> bool:
        return (ts / HOUR_MS + tz - from_h) % 24.0 < hours

    return active


# -- positives ---------------------------------------------------------------------------------------------


def two_services(p: _Planner) -> None:
    """A backend and a reporting job elsewhere on one key, together 14-20 h a day from the start."""
    for _ in range(_positives(p)):
        rng = p.rng
        key = _key(p, _rate(p, 1.0, 15.0), rng.uniform(0.4, 0.8))
        provider = None
        if rng.random() < 0.6:  # the backend runs in a cloud (else in the tenant's own network)
            provider, net = _cloud(p)
            agent = rng.choice(_BACKEND_AGENTS)
            key.app.hosts = [
                Host(ip, str(net), p.t0 - DAY_MS, p.end + DAY_MS) for ip in _ips(p, net, rng.randint(2, 6))
            ]
            key.app.agents = [(p.t0 - DAY_MS, agent)]
        _, job_net = _cloud(p, avoid=provider)
        job_agent = rng.choice(_REPORTING_AGENTS)
        hours = rng.uniform(14.0, 20.0)
        records = _stream(
            p, key, p.t0, p.end, _rate(p, 0.3, 3.0), _ips(p, job_net, rng.randint(1, 3)), job_agent,
            _daily(p, key, rng.uniform(4.0, 9.0), hours),
        )  # fmt: skip
        due = first_due(records, key.traffic_start_ms + LEARNING_MS)
        if due is None:
            continue
        _label(
            p, SHARED, key, due, records[-1][0] + LABEL_TAIL_MS,
            f"One key, two services: {key.app.agents[0][1].split('/')[0]} on {key.app.hosts[0].network} and a "
            f"reporting job ({job_agent}) on {job_net}, together {hours:.0f} h a day.",
            records,
        )  # fmt: skip


def third_party(p: _Planner) -> None:
    """The key copied into a SaaS integration after learning: a poller every 1-4 minutes from a cloud."""
    for _ in range(_positives(p)):
        rng = p.rng
        key = _key(p, _rate(p, 1.0, 20.0), rng.uniform(0.5, 0.8))
        start = rng.randrange(p.learn_end + HOUR_MS, max(p.learn_end + 2 * HOUR_MS, p.end - 12 * HOUR_MS))
        _, net = _cloud(p)
        agent = rng.choice(_INTEGRATION_AGENTS)
        every = rng.uniform(1.0, 4.0)
        records = _stream(p, key, start, p.end, 1.0 / every, _ips(p, net, rng.randint(1, 2)), agent)
        if len(records) < 2:
            continue
        first, rest = records[:1], records[1:]
        due = first_due(records, p.t0 + LEARNING_MS)
        _label(
            p, NEW_IP, key, first[0][0], first[0][0],
            f"A third-party integration ({agent}) starts using the key from {net}, a network it never used.",
            first,
        )  # fmt: skip
        if due is None:  # too short to alert: the new network alone
            p.extra.append((key, rest))
            continue
        _label(
            p, SHARED, key, due, rest[-1][0] + LABEL_TAIL_MS,
            f"Key copied into a third-party integration: {agent} polls every ~{every:.1f} min from {net} beside "
            "the key's own service.",
            rest,
        )  # fmt: skip
        key.busy.append((start - 2 * HOUR_MS, p.end))


# -- look-alikes -------------------------------------------------------------------------------------------


def rotation_overlap(p: _Planner) -> None:
    """Negative: old and new key used by one service side by side for about a day, then the old one revoked."""
    for _ in range(_lookalikes(p)):
        rng = p.rng
        key = _key(p, _rate(p, 1.0, 20.0), rng.uniform(0.4, 0.8))
        created = rng.randrange(p.learn_end - 12 * HOUR_MS, max(p.learn_end, p.end - 36 * HOUR_MS))
        switch_start = created + rng.randint(10, 120) * MINUTE_MS
        switch_end = min(p.end - HOUR_MS, switch_start + rng.randint(20, 28) * HOUR_MS)
        new = p.rotate(key, created, switch_start, switch_end, switch_end + rng.randint(1, 6) * HOUR_MS)
        new.incident = True
        p.count("sharing_rotation_overlaps")


def autoscaling(p: _Planner) -> None:
    """Negative: one service scaled out to dozens of addresses in the /24s it already uses."""
    for _ in range(_lookalikes(p)):
        rng = p.rng
        key = _key(p, _rate(p, 3.0, 30.0), rng.uniform(0.4, 0.8))
        at = rng.randrange(p.learn_end, p.end - 6 * HOUR_MS)
        used = {h.ip for h in key.app.hosts}
        nets = sorted({h.network for h in key.app.hosts})
        for _ in range(rng.randint(20, 50)):
            key.app.hosts.append(p.host(ipaddress.ip_network(rng.choice(nets)), used, at, p.end + DAY_MS))
        p.count("sharing_autoscaling")


def sdk_upgrade(p: _Planner) -> None:
    """Negative: a new SDK version rolled out over 2-8 hours, both versions side by side meanwhile."""
    for _ in range(_lookalikes(p)):
        rng = p.rng
        key = _key(p, _rate(p, 2.0, 20.0), rng.uniform(0.4, 0.8))
        old = rng.choice(_BACKEND_AGENTS)
        name, _, version = old.partition("/")
        new = f"{name}/{int(version.split('.')[0]) + 1}.0.0"
        at = rng.randrange(p.learn_end, p.end - 10 * HOUR_MS)
        rollout = rng.randint(2, 8) * HOUR_MS
        key.app.agents = [(p.t0 - DAY_MS, old), (at + rollout, new)]
        hosts = [h.ip for h in key.app.hosts]
        records = _stream(p, key, at, at + rollout, key.app.peak_rate * p.c.scale * 0.5, hosts, new)
        p.extra.append((key, records))
        p.count("sharing_sdk_upgrades")


def migration(p: _Planner) -> None:
    """Negative: a service moves once to a standby network the key already knew, overlapping 1-2 hours."""
    for _ in range(_lookalikes(p)):
        rng = p.rng
        key = _key(p, _rate(p, 2.0, 20.0), rng.uniform(0.4, 0.8))
        at = rng.randrange(p.learn_end, p.end - 6 * HOUR_MS)
        overlap = rng.randint(60, 120) * MINUTE_MS
        _, net = _cloud(p)
        new_hosts = _ips(p, net, rng.randint(2, 5))
        key.app.hosts = [Host(h.ip, h.network, h.start_ms, at + overlap) for h in key.app.hosts]
        key.app.hosts += [Host(ip, str(net), at, p.end + DAY_MS) for ip in new_hosts]
        agent = key.app.agents[0][1]
        first = p.record(key, p.t0 + rng.randrange(HOUR_MS), new_hosts[0], "GET", "/v1/account", 200, 12.0, agent)
        standby = [first, *_stream(p, key, first[0], at, 1.0 / rng.randint(120, 360), new_hosts[:1], agent)]
        p.extra.append((key, standby))
        p.count("sharing_migrations")


def sidecar(p: _Planner) -> None:
    """Negative: a second product (a proxy or exporter) on the service's own hosts, all day."""
    for _ in range(_lookalikes(p)):
        rng = p.rng
        key = _key(p, _rate(p, 1.0, 15.0), rng.uniform(0.4, 0.8))
        hosts = [h.ip for h in key.app.hosts]
        records = _stream(p, key, p.t0, p.end, _rate(p, 0.2, 2.0), hosts, rng.choice(_SIDECARS))
        p.extra.append((key, records))
        p.count("sharing_sidecars")


def nightly_job(p: _Planner) -> None:
    """Negative: a nightly job elsewhere shares the key, but the daytime service is idle while it runs (never
    in the same 30-minute window): by the rule, not two services active together."""
    for _ in range(_lookalikes(p)):
        rng = p.rng
        key = _key(p, _rate(p, 1.0, 10.0), rng.uniform(0.4, 0.8))
        tz = key.tenant.tz_hours
        from_h, hours = rng.uniform(0.5, 3.0), rng.uniform(1.0, 2.5)
        day = p.t0 - p.t0 % DAY_MS
        while day < p.end:
            job = day + int(((from_h - tz) % 24.0) * HOUR_MS)
            key.app.idle.append((job - 40 * MINUTE_MS, job + int(hours * HOUR_MS) + 40 * MINUTE_MS))
            day += DAY_MS
        _, net = _cloud(p)
        records = _stream(
            p, key, p.t0, p.end, _rate(p, 3.0, 15.0), _ips(p, net, 1), rng.choice(_REPORTING_AGENTS),
            _daily(p, key, from_h, hours),
        )  # fmt: skip
        p.extra.append((key, records))
        p.count("sharing_nightly_jobs")


SITUATIONS: tuple[Situation, ...] = (
    two_services,
    third_party,
    rotation_overlap,
    autoscaling,
    sdk_upgrade,
    migration,
    sidecar,
    nightly_job,
)
