"""Hard network situations for the simulator (`keywatch simulate --hard-network`): what broke usedFromNewIp.

- Browsers on residential networks: a server key shipped in a web app, used for a few hours from hundreds of
  /24s in many residential /16s (one simulated ISP, ASN, per /16, in 100.64.0.0/10). The truth is what the
  folded rule should say with its defaults (`fanout_networks` 3): one alert for each of the first two
  networks, then one "many networks" alert: three labels, each at the first request of its network. Their
  browser user agents are also browser use of the key: a usedFromBrowser label for each UTC day they span.
- Keys created long before the logs start: created 88 days before the scenario, requests from its start, from
  two or more of the tenant's networks. Their first requests must not alert (negative, no label); one of them
  is leaked once it has learned (a labelled usedFromNewIp, so learning is seen to end). Used daily when they
  reach the 90-day rotation age (day 2), they are genuinely overdue: labelled apiKey.rotationOverdue from then.
- Trusted CI runners: a tenant's CI runner range (in 198.18.0.0/15) that some of its keys use from after
  the learning period. Negative when replayed with the `keywatch.toml` written next to the data (its
  `[detection.trusted.tenant.<tenant>] ci-runners` list); without it, those requests are new ranges. A CI
  job beside the key's own service makes the key shared (`apiKey.sharedAcrossServices`, trusted list or not):
  labelled when the service is busy enough to be active in three of the jobs' windows.

`plan_network_situations(planner)` adds all of them; it draws from the planner's generator only when called,
so a scenario without `--hard-network` stays byte for byte what it was.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from keywatch.core.rotation_age import RotationAgeConfig
from keywatch.sim.scenario import (
    DAY_MS,
    ENDPOINTS,
    FROM_BROWSER,
    HOUR_MS,
    MINUTE_MS,
    NEW_IP,
    ROTATION_OVERDUE,
    SHARED,
    Incident,
    KeyPlan,
    env_networks,
)
from keywatch.sim.situations_sharing import shared_due

if TYPE_CHECKING:
    from keywatch.sim.scenario import Plan, _Planner

OLD_KEY_AGE_MS = 88 * DAY_MS
OVERDUE_AGE_MS = int(float(RotationAgeConfig.model_fields["max_age_days"].default) * DAY_MS)
FANOUT_NETWORKS = 3  # the detector's default `fanout_networks`: the labels of the browser situation follow it
TRUSTED_LIST = "ci-runners"
_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
)


def plan_network_situations(planner: _Planner) -> None:
    """Add the residential-browser keys, the keys created long before the logs, and the trusted CI runners."""
    for number in range(1, 3):
        _plan_browsers(planner, number)
    _plan_old_keys(planner)
    _plan_trusted_ci(planner)


def _incident(planner: _Planner, key: KeyPlan, ident: str, records: list[Any], start: int, text: str) -> None:
    planner.incidents.append(
        Incident(id=ident, type=NEW_IP, key=key, start_ms=start, end_ms=start, description=text, records=records)
    )


def _learned_keys(planner: _Planner, when: int) -> list[KeyPlan]:
    """Keys fit for an incident at `when` that have carried traffic since the start (learned by then)."""
    return [
        k
        for k in planner.candidates(when)
        if k.traffic_start_ms == planner.t0 and k.env == "live" and k.normal_rate(when, planner.c.scale) >= 0.3
    ]


def _plan_browsers(planner: _Planner, number: int) -> None:
    rng = planner.rng
    start_min, start_max = planner.learn_end + HOUR_MS, planner.end - 7 * HOUR_MS
    if start_max <= start_min:
        return
    when = rng.randrange(start_min, start_max)
    pool = _learned_keys(planner, when)
    if not pool:
        return
    key = rng.choice(pool)
    key.incident = True
    duration = rng.randint(2, 5) * HOUR_MS
    key.busy.append((when - 2 * HOUR_MS, when + duration + 2 * HOUR_MS))
    # Residential /16s of this situation: 100.<64 + 24 * (number - 1) + j>.0.0/16, one simulated ISP each.
    nets = rng.randint(8, 20)
    base = 64 + 24 * (number - 1)
    for j in range(nets):
        planner.networks.append(
            {
                "network": f"100.{base + j}.0.0/16",
                "asn": 64900 + base + j,
                "org": f"residential ISP {base + j} (simulated)",
                "role": "residential",
            }
        )
    ranges = rng.sample([(j, third) for j in range(nets) for third in range(256)], rng.randint(150, 400))
    endpoints = ENDPOINTS[key.app.profile]
    records = []
    for j, third in ranges:
        ip = f"100.{base + j}.{third}.{rng.randint(2, 250)}"
        agent = rng.choice(_BROWSERS)
        first = when + rng.randrange(duration)
        for _ in range(rng.randint(1, 4)):
            method, template = rng.choice(endpoints)[:2]
            path = template.split("{", 1)[0].rstrip("/") or "/v1/customers"
            ts = first + rng.randrange(10 * MINUTE_MS)
            records.append(planner.record(key, ts, ip, method, path, 200, rng.uniform(40, 300), agent))
    records.sort(key=lambda r: r[0])
    firsts: dict[str, int] = {}
    for ts, req in records:
        firsts.setdefault(".".join(req[3].split(".")[:2]), ts)
    order = sorted(firsts.items(), key=lambda kv: kv[1])
    total = f"{len(ranges)} /24s in {nets} residential /16s over {duration // HOUR_MS} h"
    labelled = order[:FANOUT_NETWORKS]
    # Each label carries the records from its network's first request up to the next label's (all emitted once).
    bounds = [ts for _, ts in labelled[1:]] + [records[-1][0] + 1]
    for i, (net, ts) in enumerate(labelled, 1):
        part = [r for r in records if ts <= r[0] < bounds[i - 1]]
        if i < FANOUT_NETWORKS:
            ident, text = f"inc-browsers-{number:03d}-net{i}", f"network {i}, {net}.0.0/16: one alert for it"
        else:
            ident = f"inc-browsers-{number:03d}-many"
            text = f"the {FANOUT_NETWORKS}rd new network, {net}.0.0/16: one 'many networks' alert, then none for a day"
        _incident(planner, key, ident, part, ts, f"Server key used from browsers ({total}): {text}.")
    # The same requests are browser use of the key (browser user agents): one usedFromBrowser a UTC day.
    days: dict[int, int] = {}
    for ts, _ in records:
        days.setdefault(ts // DAY_MS, ts)
    for d, (_, ts) in enumerate(sorted(days.items()), 1):
        planner.incidents.append(
            Incident(
                id=f"inc-spa-{number:03d}-d{d}", type=FROM_BROWSER, key=key, start_ms=ts, end_ms=ts,
                description=f"Server key used from browsers ({total}): the first browser request of UTC day {d}.",
            )
        )  # fmt: skip


def _plan_old_keys(planner: _Planner) -> None:
    rng = planner.rng
    leaked = False
    for number in range(1, 5):
        tenant = rng.choice(planner.tenants)
        app = planner.make_app(tenant, "live")
        v4 = env_networks(tenant, "live")[0]  # the tenant's production networks (sandbox apps have their own)
        used = {h.ip for h in app.hosts}
        for own in v4[:3]:
            if str(own) not in {h.network for h in app.hosts}:
                app.hosts.append(planner.host(own, used, planner.t0 - DAY_MS, planner.end + DAY_MS))
        app.peak_rate = max(app.peak_rate, 2.0)
        app.schedule = "always"
        key = planner.new_key(tenant, "live", planner.t0 - OLD_KEY_AGE_MS, app=app)
        key.incident = True  # no benign change or other incident on it
        planner.created_event(key, key.created_ms)
        crossing = key.created_ms + OVERDUE_AGE_MS
        if crossing < planner.end:  # in daily use when it reaches the rotation age: genuinely overdue
            planner.incidents.append(
                Incident(
                    id=f"inc-oldkey-overdue-{number:03d}", type=ROTATION_OVERDUE, key=key, start_ms=crossing,
                    end_ms=planner.end, description="Key in daily use reaches the 90-day rotation age, never rotated.",
                )
            )  # fmt: skip
        when = planner.t0 + 36 * HOUR_MS + rng.randrange(6 * HOUR_MS)
        if leaked or when >= planner.end - HOUR_MS:
            continue
        leaked = True
        net = planner.attacker_ranges.pop()
        ip = planner.host(net, set(), 0, 0).ip
        agent = "curl/7.81.0"
        records = [
            planner.record(key, when + i * rng.randint(5, 40) * 1000, ip, "GET", "/v1/balance", 200, 30.0, agent)
            for i in range(rng.randint(3, 12))
        ]
        key.busy.append((when - 2 * HOUR_MS, when + 2 * HOUR_MS))
        _incident(
            planner,
            key,
            "inc-oldkey-001",
            records,
            records[0][0],
            f"Key created 88 days before the logs start, leaked once learned: used from {ip} ({net}).",
        )


def _plan_trusted_ci(planner: _Planner) -> None:
    rng = planner.rng
    tenant = rng.choice(planner.tenants)
    ci = ipaddress.ip_network(f"198.18.{tenant.index}.0/24")
    planner.networks.append(
        {"network": str(ci), "asn": 64800, "org": "CI runners (simulated)", "role": "trusted", "tenant": tenant.name}
    )
    keys = [
        k
        for k in planner.keys
        if k.tenant is tenant and k.traffic_start_ms == planner.t0 and not (k.replaces or k.incident or k.revoked_ms)
    ]
    if planner.end - planner.learn_end < 2 * HOUR_MS:
        return
    keys = [k for k in keys if k.env == keys[0].env] if keys else []  # the runners of one environment's tests
    for key in keys[:3]:
        key.incident = True  # no rotation or revocation later: the CI jobs would outlive the key
        records = []
        at = planner.learn_end + rng.randrange(HOUR_MS)
        while at < min(planner.end, key.traffic_end_ms) - 10 * MINUTE_MS:
            runner = str(ci[rng.randint(10, 250)])  # a fresh runner for every job
            for i in range(rng.randint(5, 20)):
                method, template = rng.choice(ENDPOINTS[key.app.profile])[:2]
                path = template.split("{", 1)[0].rstrip("/") or "/v1/customers"
                records.append(planner.record(key, at + i * 2000, runner, method, path, 200, 50.0, "ci-tests/1.0"))
            at += rng.randint(1, 4) * HOUR_MS
        due = shared_due(planner, key, records)
        if due is None:
            planner.extra.append((key, records))
        else:  # CI jobs on a live service's key, beside the service: the key is shared (trusted or not)
            planner.incidents.append(
                Incident(
                    id=f"inc-shared-ci-{key.key_id}",
                    type=SHARED,
                    key=key,
                    start_ms=due,
                    end_ms=records[-1][0] + HOUR_MS,
                    description="CI jobs (ci-tests) on the runners' network use the live key of a service.",
                    records=records,
                )
            )
        planner.count("trusted_ci_jobs")


def trusted_config(plan: Plan) -> str:
    """The `[detection.trusted]` TOML that makes the scenario's CI runner ranges trusted (for `--config`)."""
    lists: dict[str, list[str]] = {}
    for net in plan.networks:
        if net.get("role") == "trusted":
            lists.setdefault(str(net["tenant"]), []).append(str(net["network"]))
    lines = ["# Written by keywatch simulate --hard-network: replay with --config <this file>."]
    for tenant, networks in sorted(lists.items()):
        quoted = ", ".join(f'"{n}"' for n in networks)
        lines += ["", f'[detection.trusted.tenant."{tenant}"]', f"{TRUSTED_LIST} = [{quoted}]"]
    return "\n".join(lines) + "\n"
