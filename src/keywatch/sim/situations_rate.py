"""Situations of issue #12 for the 4xx-cluster and request-spike rules, added to a planned scenario.

Each situation is a function of the planner, run after the default scenario is planned (so the default
part of the plan is unchanged), on keys of its own, deterministic from the seed. Rates are the ones the
situation is about, whatever `--scale` (a busy key makes hundreds of requests a minute).

Positives (labelled): credential stuffing (15-40 401/min on a quiet key), slow 404 enumeration (15/min on a
medium key), a 403 probe at 6/min on a busy key (200-400 requests/min), a ramp (x1 -> x8 over 30 minutes,
then 30 minutes at x8; labelled from the first minute at x3, the lowest multiple at which a spike rule may
alert, to its end).
Negatives (unlabelled: they count against precision if they fire): a daily batch job (x8 for 15 minutes at
the same UTC hour every day), a deploy bump (x1.6 for 10 minutes), a bad deploy with 2 minutes of 40% 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from keywatch.core.rate_baseline import RateBaselineConfig
from keywatch.sim.scenario import (
    _ATTACKER_AGENTS,
    _PROBE_PATHS,
    DAY_MS,
    ENDPOINTS,
    ERROR_CLUSTER,
    HOUR_MS,
    MINUTE_MS,
    SPIKE,
    KeyPlan,
)

if TYPE_CHECKING:
    from keywatch.sim.scenario import _Planner

Situation = Callable[["_Planner"], None]
RAMP_FACTOR = 8.0
RAMP_MINUTES = 30
# A ramp's label starts at the first minute at the lowest multiple of its normal rate at which the spike rules
# may alert (the per-minute rule's `min_ratio`); the sustained rule (x5 by default) fires later on the climb.
ALERT_MULTIPLE = float(RateBaselineConfig.model_fields["min_ratio"].default)


def _count(p: _Planner) -> int:
    return max(2, p.c.per_type // 3)


def _key(p: _Planner, rate: float, trough: float = 0.7) -> KeyPlan:
    """A live key of its own, existing before the window, always on, `rate` requests/min at its peak."""
    tenant = p.rng.choice(p.tenants)
    key = p.new_key(tenant, "live", p.t0)
    app = key.app
    app.peak_rate, app.trough, app.schedule = rate / p.c.scale, trough, "always"
    key.incident = True
    p.created_event(key, p.t0)
    return key


def _times(p: _Planner, start: int, per_minute: float, minutes: int) -> list[int]:
    n = max(1, round(per_minute * minutes))
    return sorted([start, *(start + p.rng.randrange(minutes * MINUTE_MS) for _ in range(n - 1))])


def credential_stuffing(p: _Planner) -> None:
    """15-40 401s a minute for 3-5 minutes on a quiet key (1-3 requests/min)."""
    for _ in range(_count(p)):
        key, when, rng = _key(p, rng_rate(p, 1.0, 3.0)), p.random_time(), p.rng
        per_minute, minutes = rng.uniform(15, 40), rng.randint(3, 5)
        host, agent = rng.choice(key.app.hosts), rng.choice(_ATTACKER_AGENTS)
        method, template = ENDPOINTS[key.app.profile][0][:2]
        path = template.split("{", 1)[0].rstrip("/") or "/v1/customers"
        records = [
            p.record(key, ts, host.ip, method, path, 401, rng.uniform(4, 20), agent)
            for ts in _times(p, when, per_minute, minutes)
        ]
        p.add_incident(
            ERROR_CLUSTER, key, records[0][0], records[-1][0],
            f"Credential stuffing: {len(records)} x HTTP 401 at ~{per_minute:.0f}/min for {minutes} min "
            "on a quiet key.",
            records=records,
        )  # fmt: skip


def slow_enumeration(p: _Planner) -> None:
    """404s at 15/min with distinct unknown ids for 5-8 minutes on a key with 10-30 requests/min."""
    for _ in range(_count(p)):
        key, when, rng = _key(p, rng_rate(p, 10.0, 30.0)), p.random_time(), p.rng
        minutes = rng.randint(5, 8)
        host, agent = rng.choice(key.app.hosts), rng.choice(_ATTACKER_AGENTS)
        records = [
            p.record(key, ts, host.ip, "GET", f"/v1/customers/cus_{rng.getrandbits(56):014x}", 404,
                     rng.uniform(4, 20), agent)
            for ts in _times(p, when, 15.0, minutes)
        ]  # fmt: skip
        p.add_incident(
            ERROR_CLUSTER, key, records[0][0], records[-1][0],
            f"Slow id enumeration: {len(records)} x HTTP 404 at 15/min for {minutes} min.",
            records=records,
        )  # fmt: skip


def busy_key_probe(p: _Planner) -> None:
    """403s at 6/min for 6-10 minutes on a busy key (200-400 requests/min, traffic for the 14 h around it)."""
    for _ in range(_count(p)):
        key, when, rng = _key(p, rng_rate(p, 200.0, 400.0), trough=0.8), p.random_time(), p.rng
        key.traffic_start_ms, key.traffic_end_ms = max(p.t0, when - 14 * HOUR_MS), min(p.end, when + 2 * HOUR_MS)
        minutes = rng.randint(6, 10)
        host, agent = rng.choice(key.app.hosts), rng.choice(_ATTACKER_AGENTS)
        records = []
        for ts in _times(p, when, 6.0, minutes):
            method, path = rng.choice(_PROBE_PATHS)
            path = path.replace("{cus}", f"cus_{rng.getrandbits(40):010x}")
            records.append(p.record(key, ts, host.ip, method, path, 403, rng.uniform(4, 20), agent))
        p.label_key_management(key, records, "scope probing on a busy key")
        p.add_incident(
            ERROR_CLUSTER, key, records[0][0], records[-1][0],
            f"Scope probing on a busy key: {len(records)} x HTTP 403 at 6/min for {minutes} min among hundreds "
            "of successful requests a minute.",
            records=records,
        )  # fmt: skip


def ramp(p: _Planner) -> None:
    """x1 -> x8 over 30 minutes, then 30 minutes at x8, on a key with 15-40 requests/min."""
    for _ in range(_count(p)):
        key = _key(p, rng_rate(p, 15.0, 40.0), trough=0.8)
        start = p.random_time()
        start -= start % MINUTE_MS
        for i in range(RAMP_MINUTES):
            at = start + i * MINUTE_MS
            key.app.bumps.append((at, at + MINUTE_MS, 1.0 + (RAMP_FACTOR - 1.0) * (i + 0.5) / RAMP_MINUTES))
        flat = start + RAMP_MINUTES * MINUTE_MS
        end = flat + RAMP_MINUTES * MINUTE_MS
        key.app.bumps.append((flat, end, RAMP_FACTOR))
        first = next(
            i for i in range(RAMP_MINUTES) if 1.0 + (RAMP_FACTOR - 1.0) * (i + 0.5) / RAMP_MINUTES >= ALERT_MULTIPLE
        )
        p.add_incident(
            SPIKE, key, start + first * MINUTE_MS, end,
            f"Gradual ramp x1 -> x{RAMP_FACTOR:.0f} over {RAMP_MINUTES} min, then {RAMP_MINUTES} min flat; "
            f"labelled from minute {first} of the ramp, the first at >= x{ALERT_MULTIPLE:g} (the lowest multiple "
            "a spike rule alerts at).",
        )  # fmt: skip


def daily_batch(p: _Planner) -> None:
    """Negative: x8 for 15 minutes at the same UTC hour every day, on a key with 10-30 requests/min."""
    for _ in range(_count(p)):
        key = _key(p, rng_rate(p, 10.0, 30.0), trough=0.8)
        hour, minute = p.rng.randrange(24), p.rng.randrange(45)
        day = p.t0
        while day < p.end:
            at = day + hour * HOUR_MS + minute * MINUTE_MS
            key.app.bumps.append((at, at + 15 * MINUTE_MS, 8.0))
            day += DAY_MS
        p.count("daily_batch_jobs")


def deploy_bump(p: _Planner) -> None:
    """Negative: x1.6 for 10 minutes after the learning period, on a key with 10-30 requests/min."""
    for _ in range(_count(p)):
        key, at = _key(p, rng_rate(p, 10.0, 30.0)), p.random_time()
        key.app.bumps.append((at, at + 10 * MINUTE_MS, 1.6))
        p.count("deploy_bumps_x1.6")


def bad_deploy_5xx(p: _Planner) -> None:
    """Negative: 2 minutes in which 40% of a 20-60 requests/min key's answers are 5xx (not 4xx)."""
    for _ in range(_count(p)):
        key, at, rng = _key(p, rng_rate(p, 20.0, 60.0)), p.random_time(), p.rng
        host = rng.choice(key.app.hosts)
        agent = key.app.agent_at(at)
        records = [
            p.record(key, ts, host.ip, "POST", "/v1/orders", rng.choice((500, 502, 503)), rng.uniform(30, 900), agent)
            for ts in _times(p, at, 0.4 * key.normal_rate(at, p.c.scale), 2)
        ]
        p.extra.append((key, records))
        p.count("bad_deploys_5xx")


def rng_rate(p: _Planner, low: float, high: float) -> float:
    """A rate drawn from the planner's generator, log-uniform in [low, high]."""
    return float(low * (high / low) ** p.rng.random())


SITUATIONS: tuple[Situation, ...] = (
    credential_stuffing,
    slow_enumeration,
    busy_key_probe,
    ramp,
    daily_batch,
    deploy_bump,
    bad_deploy_5xx,
)
