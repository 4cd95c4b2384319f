"""Situations of the environment rules (issue #13): sandbox and live keys on each other's hosts, and a key stolen
the day it was created, added to a planned scenario.

Each situation is a function of the planner, run after the default scenario is planned, on keys of its own,
deterministic from the seed. A tenant's sandbox apps run on networks of their own, apart from its production
hosts (`keywatch.sim.scenario.env_networks`).

Positives (labelled):
- a sandbox key used by a production service: from one of the tenant's live hosts, with that service's user
  agent and endpoints, at 0.5-8 requests/min for 1.5-9 hours (apiKey.environmentMismatch from its first request;
  the range is also new to the sandbox key, an apiKey.usedFromNewIp of the IP baseline, labelled as such);
- a live key used from the tenant's CI hosts (a range only its sandbox keys use): 1-4 test runs of 15-200
  requests within 3-25 minutes each, spread over a few hours (environmentMismatch, high; usedFromNewIp too);
- a key stolen the day it was created: a new live key deployed on the tenant's hosts, and within hours (or, one
  time in three, before its service even started) 5-40 requests from an attacker's IPv4 network that no key of
  the tenant uses, while the key still learns (apiKey.usedFromNewIp, the learning rule; IPv4 because without
  GeoIP the simulated IPv6 ranges all share one /32 with the tenants').
Look-alikes (unlabelled: they count against precision if they fire): a new key deployed on the hosts of one of
the tenant's existing services while it learns; a new key on a new host in a /24 of the tenant's /16 that no key
used yet (autoscaling in the same cloud; the /24 is listed with the tenant's ASN in networks.json); two live keys
sharing their hosts from the start.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from keywatch.core.environment import EnvironmentConfig
from keywatch.core.sharing import prefix_network, product_token
from keywatch.sim.scenario import (
    _ATTACKER_AGENTS,
    ENDPOINTS,
    ENV_MISMATCH,
    HOUR_MS,
    MINUTE_MS,
    NEW_IP,
    SHARED,
    Host,
    KeyPlan,
    Request,
)
from keywatch.sim.situations_rate import Situation
from keywatch.sim.situations_sharing import shared_due

if TYPE_CHECKING:
    from keywatch.sim.scenario import Env, Tenant, _Planner


TENANT_HISTORY_MS = EnvironmentConfig.model_fields["tenant_history_hours"].default * HOUR_MS


def _count(p: _Planner) -> int:
    return max(2, p.c.per_type // 2)


def _key(p: _Planner, tenant: Tenant, env: Env, rate: float) -> KeyPlan:
    """A key of its own existing before the window, always on, `rate` requests/min at its peak whatever --scale."""
    key = p.new_key(tenant, env, p.t0)
    key.app.peak_rate, key.app.schedule = rate / p.c.scale, "always"
    key.incident = True
    p.created_event(key, p.t0)
    return key


def _path(p: _Planner, profile: str) -> tuple[str, str]:
    endpoints = ENDPOINTS[profile]
    method, template = p.rng.choices([e[:2] for e in endpoints], weights=[e[2] for e in endpoints])[0]
    return method, template.replace("{", "").replace("}", "_" + f"{p.rng.getrandbits(40):010x}")


def _requests(
    p: _Planner, key: KeyPlan, times: list[int], host: str, profile: str, agent: str
) -> list[tuple[int, Request]]:
    records = []
    for ts in sorted(times):
        method, path = _path(p, profile)
        status = 200 if p.rng.random() < 0.985 else p.rng.choice((400, 404, 409))
        records.append(p.record(key, ts, host, method, path, status, p.rng.uniform(20, 300), agent))
    return records


def _label_both(p: _Planner, key: KeyPlan, records: list[tuple[int, Request]], text: str) -> None:
    """The mismatch, and the new range it is for the key (the IP baseline's alert), over the same requests."""
    start, end = records[0][0], records[-1][0]
    # Each record is materialised once: the first with the new-range label, the others with the mismatch's.
    p.add_incident(ENV_MISMATCH, key, start, end, text, records=records[1:])
    p.add_incident(NEW_IP, key, start, end, f"{text} (a range the key never used)", records=records[:1])


def _label_shared(
    p: _Planner, key: KeyPlan, records: list[tuple[int, Request]], host: Host, agent: str, when: int, who: str
) -> None:
    """The key's own service and `who` (another client on another network) busy together: a shared key too
    (the sharing rule's windows), labelled when they are."""
    due = shared_due(p, key, records)
    other_network = all(prefix_network(host.ip) != prefix_network(h.ip) for h in key.app.hosts)
    if due is not None and other_network and product_token(agent) != product_token(key.app.agent_at(when)):
        p.add_incident(
            SHARED, key, due, records[-1][0] + HOUR_MS, f"Key of a service also used by {who} ({agent}) on {host.ip}"
        )


def sandbox_key_in_production(p: _Planner) -> None:
    """A production service deployed with the sandbox key: from a live host, for hours."""
    for _ in range(_count(p)):
        tenant = p.rng.choice(p.tenants)
        live = _key(p, tenant, "live", p.rng.uniform(1.0, 6.0))
        sandbox = _key(p, tenant, "sandbox", p.rng.uniform(0.5, 3.0))
        when = p.random_time()
        host = p.rng.choice(live.app.hosts_at(when) or live.app.hosts)
        rate, hours = p.rng.uniform(0.5, 8.0), p.rng.uniform(1.5, 9.0)
        end = min(p.end - MINUTE_MS, when + int(hours * HOUR_MS))
        n = max(5, round(rate * (end - when) / MINUTE_MS))
        times = [when, *(when + p.rng.randrange(end - when) for _ in range(n - 1))]
        records = _requests(p, sandbox, times, host.ip, live.app.profile, live.app.agent_at(when))
        _label_both(
            p, sandbox, records,
            f"Sandbox key used by the production service of {live.key_id} from its host {host.ip}: {n} requests "
            f"over {(records[-1][0] - records[0][0]) / HOUR_MS:.1f} h",
        )  # fmt: skip
        _label_shared(p, sandbox, records, host, live.app.agent_at(when), when, "a production service")


def live_key_on_ci_hosts(p: _Planner) -> None:
    """The live secret on a CI runner: integration-test runs from the tenant's sandbox hosts with the live key."""
    for _ in range(_count(p)):
        tenant = p.rng.choice(p.tenants)
        sandbox = _key(p, tenant, "sandbox", p.rng.uniform(0.5, 4.0))
        live = _key(p, tenant, "live", p.rng.uniform(1.0, 8.0))
        when = p.random_time()
        host = p.rng.choice(sandbox.app.hosts_at(when) or sandbox.app.hosts)
        agent = sandbox.app.agent_at(when)
        records: list[tuple[int, Request]] = []
        start = when
        for _ in range(p.rng.randint(1, 4)):
            if start >= p.end - 30 * MINUTE_MS:
                break
            minutes = p.rng.randint(3, 25)
            n = p.rng.randint(15, max(15, min(200, 12 * minutes)))  # a test run's pace: no request spike
            times = [start, *(start + p.rng.randrange(minutes * MINUTE_MS) for _ in range(n - 1))]
            records += _requests(p, live, times, host.ip, sandbox.app.profile, agent)
            start += p.rng.randint(40, 180) * MINUTE_MS
        records.sort(key=lambda r: r[0])
        _label_both(
            p, live, records,
            f"Live key used by CI runs on {host.ip}, a host of sandbox key {sandbox.key_id}: {len(records)} requests",
        )  # fmt: skip
        _label_shared(p, live, records, host, agent, when, "CI runs")


def _attacker_range(p: _Planner, tenant: Tenant) -> ipaddress.IPv4Network:
    """An attacker IPv4 /24 in a /16 that none of the tenant's incidents used."""
    used = {
        str(ipaddress.ip_network(f"{rec[3]}/16", strict=False))
        for inc in p.incidents
        if inc.key.tenant is tenant
        for _, rec in inc.records
        if ":" not in rec[3]
    }
    for i in range(len(p.attacker_ranges) - 1, -1, -1):
        net = p.attacker_ranges[i]
        if isinstance(net, ipaddress.IPv4Network) and str(net.supernet(new_prefix=16)) not in used:
            del p.attacker_ranges[i]
            return net
    raise RuntimeError("no attacker range left")  # 400 drawn, a handful used


def stolen_at_creation(p: _Planner) -> None:
    """A key created today, leaked at once: used from an attacker's network while it learns."""
    for _ in range(max(2, p.c.per_type // 3)):
        # The tenant needs a day of history to compare with (`tenant_history_hours`): not in a shorter scenario.
        earliest, last = max(p.t0 + TENANT_HISTORY_MS + 2 * HOUR_MS, p.learn_end + HOUR_MS), p.end - 45 * MINUTE_MS
        if last <= earliest + HOUR_MS:
            return
        tenant = p.rng.choice(p.tenants)
        attack = p.rng.randrange(earliest, last)
        early = p.rng.random() < 1 / 3
        if early:  # the attacker is first: the service starts later
            created = attack - p.rng.randint(2, 20) * MINUTE_MS
            start = attack + p.rng.randint(10, 90) * MINUTE_MS
        else:
            start = attack - p.rng.randint(20, 6 * 60) * MINUTE_MS
            created = start - p.rng.randint(5, 60) * MINUTE_MS
        created = max(created, p.learn_end)  # created after the learning history, like the others
        start = max(start, created + 5 * MINUTE_MS)
        key = p.new_key(tenant, "live", created)
        key.incident = True
        key.app.peak_rate = p.rng.uniform(0.5, 6.0) / p.c.scale
        key.traffic_start_ms = start
        p.created_event(key, created)
        net = _attacker_range(p, tenant)
        used: set[str] = set()
        ip = p.host(net, used, 0, 0).ip
        agent = p.rng.choice(_ATTACKER_AGENTS)
        n, duration = p.rng.randint(5, 40), p.rng.randint(1, 20) * MINUTE_MS
        recon = ("/v1/balance", "/v1/customers?limit=100", "/v1/payments?limit=100", "/v1/account", "/v1/events")
        records = [p.record(key, attack, ip, "GET", "/v1/balance", 200, p.rng.uniform(20, 60), agent)]
        for ts in sorted(attack + p.rng.randrange(duration) for _ in range(n - 1)):
            records.append(p.record(key, ts, ip, "GET", p.rng.choice(recon), 200, p.rng.uniform(25, 250), agent))
        first = "before its service started" if early else "hours after it was deployed"
        p.add_incident(
            NEW_IP, key, records[0][0], records[-1][0],
            f"Key stolen the day it was created: {n} requests from {ip} ({net}, a network no key of {tenant.name} "
            f"uses) {first}, while the key still learns.",
            records=records,
        )  # fmt: skip


def _existing_live(p: _Planner, tenant: Tenant) -> KeyPlan | None:
    keys = [
        k
        for k in p.keys
        if k.tenant is tenant and k.env == "live" and not k.incident and k.traffic_end_ms >= p.end and k.app.hosts
    ]
    return p.rng.choice(keys) if keys else None


def new_key_on_existing_hosts(p: _Planner) -> None:
    """Negative: a new key for another workload of an existing service, on that service's hosts, while it learns."""
    for _ in range(_count(p)):
        tenant = p.rng.choice(p.tenants)
        existing = _existing_live(p, tenant)
        if existing is None:
            continue
        created = p.random_time()
        key = p.new_key(tenant, "live", created)
        key.incident = True
        key.app.hosts = list(existing.app.hosts)
        key.traffic_start_ms = created + p.rng.randint(5, 60) * MINUTE_MS
        p.created_event(key, created)
        p.count("new_keys_on_existing_hosts")


def new_key_autoscaled(p: _Planner) -> None:
    """Negative: a new key on new hosts in a /24 of the tenant's own /16 that no key used yet."""
    taken = {str(n) for t in p.tenants for n in t.networks}
    for _ in range(_count(p)):
        tenant = p.rng.choice(p.tenants)
        third = next(t for t in range(250, 0, -1) if f"10.{tenant.index + 1}.{t}.0/24" not in taken)
        net = ipaddress.ip_network(f"10.{tenant.index + 1}.{third}.0/24")
        taken.add(str(net))
        p.networks.append({"network": str(net), "asn": 64600 + tenant.index, "org": f"{tenant.name} (simulated)",
                           "role": "tenant"})  # fmt: skip
        created = p.random_time()
        key = p.new_key(tenant, "live", created)
        key.incident = True
        used: set[str] = set()
        key.app.hosts = [p.host(net, used, created, p.end + HOUR_MS) for _ in range(p.rng.randint(1, 3))]
        key.traffic_start_ms = created + p.rng.randint(5, 60) * MINUTE_MS
        p.created_event(key, created)
        p.count("new_keys_autoscaled")


def live_keys_sharing_hosts(p: _Planner) -> None:
    """Negative: two live keys (two workloads of one service) on the same hosts from the start."""
    for _ in range(_count(p)):
        tenant = p.rng.choice(p.tenants)
        first = _key(p, tenant, "live", p.rng.uniform(0.5, 5.0))
        second = _key(p, tenant, "live", p.rng.uniform(0.5, 5.0))
        second.app.hosts = [Host(h.ip, h.network, h.start_ms, h.end_ms) for h in first.app.hosts]
        p.count("live_keys_sharing_hosts")


SITUATIONS: tuple[Situation, ...] = (
    sandbox_key_in_production,
    live_key_on_ci_hosts,
    stolen_at_creation,
    new_key_on_existing_hosts,
    new_key_autoscaled,
    live_keys_sharing_hosts,
)
