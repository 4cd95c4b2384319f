"""Turn a scenario plan into time-ordered records in the contract's JSON form.

Every key and every spike is a source asked for one minute of requests at a time; each minute's requests
are sorted (stable, so ties keep source order) and emitted before the next minute is drawn. This merges by
event time in O(n log m) like a heap merge over the sources, at a fraction of the per-record cost, and holds
one minute in memory.
"""

from __future__ import annotations

import heapq
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from keywatch.sim.scenario import (
    ENDPOINTS,
    MINUTE_MS,
    SPIKE,
    Incident,
    KeyPlan,
    Plan,
    Request,
    seeded,
)

Item = tuple[int, str, str]  # (ts_ms, subject, the record's JSON after its "ts" member)
Kind = Literal["request", "lifecycle"]
T = TypeVar("T")

_OK = {"GET": 200, "POST": 200, "DELETE": 200}
_CREATED = {"/v1/customers", "/v1/orders", "/v1/payments", "/v1/refunds", "/v1/invoices"}
_4XX = (400, 401, 403, 404, 429)
_4XX_CUM = (0.25, 0.30, 0.40, 0.85, 1.0)  # 400, 401, 403, 404 (the most common), 429
_5XX = (500, 502, 503, 504)
_SAFE = re.compile(r"^[ !#-\[\]-~]*$")  # printable ASCII without '"' and '\': no JSON escaping needed
HEARTBEAT_MS = 6 * 3_600_000
_SECONDS = [f"{ms // 1000:02d}.{ms % 1000:03d}Z" for ms in range(MINUTE_MS)]


class TimeFormatter:
    """RFC 3339 with 'Z' and milliseconds, as the contract serialises times; cached per minute for speed."""

    def __init__(self) -> None:
        self._minutes: dict[int, str] = {}

    def prefix(self, minute: int) -> str:
        """'YYYY-MM-DDTHH:MM:' of the minute `minute` (epoch minutes)."""
        prefix = self._minutes.get(minute)
        if prefix is None:
            prefix = datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:")
            if len(self._minutes) > 100_000:
                self._minutes.clear()
            self._minutes[minute] = prefix
        return prefix

    def __call__(self, ts_ms: int) -> str:
        minute, rest = divmod(ts_ms, MINUTE_MS)
        return self.prefix(minute) + _SECONDS[rest]


def _safe(text: str) -> str:
    if not _SAFE.match(text):
        raise ValueError(f"{text!r} would need JSON escaping; the simulator only emits plain ASCII")
    return text


HEADER_FIELDS = ("origin", "referer", "sec_fetch_site", "sec_fetch_mode")  # a Request's optional trailing items


def request_rest(r: Request) -> str:
    """The JSON of a request record after its `ts` member (field order as in `RequestRecord`; absent browser
    headers left out, so a request without them is written as before they existed)."""
    for text in r[:6] + r[8:]:
        if text is not None:
            _safe(str(text))
    extra = r[10:]  # empty, or all four headers
    headers = "".join(f',"{n}":"{v}"' for n, v in zip(HEADER_FIELDS[: len(extra)], extra, strict=True) if v is not None)
    return (
        f'","tenant":"{r[0]}","key_id":"{r[1]}","env":"{r[2]}","ip":"{r[3]}","method":"{r[4]}","path":"{r[5]}",'
        f'"status":{r[6]},"latency_ms":{r[7]!r},"user_agent":"{r[8]}","request_id":"{r[9]}"{headers}}}'
    )


def encode_request(ts_ms: int, r: Request, fmt: Callable[[int], str]) -> bytes:
    """A request record as the contract's JSON."""
    return f'{{"ts":"{fmt(ts_ms)}{request_rest(r)}'.encode()


def encode_lifecycle(ts_ms: int, event: dict[str, Any], fmt: Callable[[int], str]) -> bytes:
    """A lifecycle event as the contract's JSON (field order as in `LifecycleEvent`)."""
    return orjson.dumps({"type": event["type"], "ts": fmt(ts_ms), **{k: v for k, v in event.items() if k != "type"}})


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (exact below 30, normal approximation above)."""
    if lam <= 0.0:
        return 0
    if lam < 30.0:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))


# Latency multipliers: a lognormal table indexed by 12 random bits is much cheaper than lognormvariate.
_TABLE_RNG = seeded("keywatch-sim/latency")
_LOGN = [math.exp(_TABLE_RNG.gauss(0.0, 0.45)) for _ in range(4096)]
_LOGN_5XX = [math.exp(_TABLE_RNG.gauss(0.7, 0.6)) for _ in range(4096)]


class _KeyTraffic:
    """Requests of one key, minute by minute: endpoints with their id pools, error mix, latencies."""

    def __init__(self, key: KeyPlan, plan: Plan, stream: str, *, p4xx: float | None = None, endpoints: int = 0) -> None:
        app = key.app
        self.key = key
        self.scale = plan.config.scale
        self.rng = seeded(f"{plan.config.seed}/{stream}")
        pools_rng = seeded(f"{app.seed}/ids")  # same ids for both keys of a rotation
        pools: dict[str, list[str]] = {}
        self.endpoints: list[tuple[str, str, list[str] | None, str, float, int]] = []
        self.cum_weights: list[float] = []
        total = 0.0
        for method, template, weight, median in ENDPOINTS[app.profile][: endpoints or None]:
            prefix, _, rest = template.partition("{")
            ids: list[str] | None = None
            suffix = ""
            if rest:
                kind, _, suffix = rest.partition("}")
                if kind not in pools:
                    size = int(math.exp(pools_rng.uniform(math.log(20), math.log(800))))
                    pools[kind] = [f"{kind}_{pools_rng.getrandbits(56):014x}" for _ in range(size)]
                ids = pools[kind]
            ok = 201 if method == "POST" and template in _CREATED else _OK.get(method, 200)
            self.endpoints.append((method, _safe(prefix), ids, _safe(suffix), median, ok))
            total += weight
            self.cum_weights.append(total)
        self.p5xx = app.p5xx
        self.p45 = app.p5xx + (app.p4xx if p4xx is None else p4xx)
        self.head = f'","tenant":"{_safe(key.tenant.name)}","key_id":"{_safe(key.key_id)}","env":"{key.env}","ip":"'
        self.subject = key.subject
        for _, agent in app.agents:
            _safe(agent)

    def emit(self, times: list[int], hosts: list[str], agent: str, out: list[Item]) -> None:
        """Append one request per time in `times` to `out`."""
        rng = self.rng
        rand, getrandbits = rng.random, rng.getrandbits
        p5, p45 = self.p5xx, self.p45
        head, subject = self.head, self.subject
        n = len(times)
        picks = rng.choices(self.endpoints, cum_weights=self.cum_weights, k=n)
        ips = rng.choices(hosts, k=n) if len(hosts) > 1 else hosts * n
        for i in range(n):
            method, prefix, ids, suffix, median, ok = picks[i]
            path = prefix + ids[int(rand() * len(ids))] + suffix if ids else prefix
            r = rand()
            if r >= p45:
                status = ok
                latency = median * _LOGN[getrandbits(12)]
            elif r >= p5:
                x = rand()
                status = 404 if 0.40 < x <= 0.85 else _4XX[next(j for j, c in enumerate(_4XX_CUM) if x <= c)]
                latency = 3.0 + 20.0 * rand()
            else:
                status = _5XX[int(rand() * 4)]
                latency = 30_000.0 + rand() * 50 if status == 504 else median * _LOGN_5XX[getrandbits(12)]
            out.append(
                (
                    times[i],
                    subject,
                    f'{head}{ips[i]}","method":"{method}","path":"{path}","status":{status},'
                    f'"latency_ms":{round(latency, 1)!r},"user_agent":"{agent}",'
                    f'"request_id":"req_{getrandbits(64):016x}"}}',
                )
            )

    def times(self, minute: int, n: int) -> list[int]:
        """`n` sorted random times inside the minute."""
        rand = self.rng.random
        return sorted([minute + int(rand() * MINUTE_MS) for _ in range(n)])


class _Baseline(_KeyTraffic):
    """A key's normal traffic: Poisson per minute around its daily cycle, from its hosts in service."""

    def __init__(self, key: KeyPlan, plan: Plan) -> None:
        super().__init__(key, plan, f"traffic/{key.key_id}")
        self.first = max(plan.config.start_ms, key.traffic_start_ms)
        self.first -= self.first % MINUTE_MS
        self.last = min(plan.config.end_ms, key.traffic_end_ms)
        self.heartbeats = self._heartbeats()

    def _heartbeats(self) -> dict[int, list[tuple[int, str]]]:
        # Every client host checks in when it starts and every ~6 h (config refresh): even on a quiet key,
        # each of its networks shows up in the history, so only incidents bring a network the key never used.
        key, rng = self.key, seeded(f"{self.rng.random()}/heartbeats")
        beats: dict[int, list[tuple[int, str]]] = {}
        for host in key.app.hosts:
            ts = max(host.start_ms, key.traffic_start_ms) + rng.randrange(5 * MINUTE_MS)
            while ts < min(host.end_ms, key.traffic_end_ms, self.last):
                if key.normal_rate(ts) > 0:
                    beats.setdefault(ts - ts % MINUTE_MS, []).append((ts, host.ip))
                ts += HEARTBEAT_MS + rng.randrange(-HEARTBEAT_MS // 8, HEARTBEAT_MS // 8)
        return beats

    def minute(self, minute: int, out: list[Item]) -> None:
        """Append this key's requests of one minute."""
        key, app, rng = self.key, self.key.app, self.rng
        n = poisson(rng, key.normal_rate(minute + MINUTE_MS // 2, self.scale))
        if app.schedule == "cron" and (minute // MINUTE_MS) % 60 == app.cron_minute and key.normal_rate(minute) > 0:
            n += min(90, poisson(rng, app.cron_burst * min(self.scale, 1.4)))  # hourly job: below any spike floor
        beats = self.heartbeats.get(minute)
        if beats:
            agent = app.agent_at(minute)
            for ts, ip in beats:
                out.append(
                    (
                        ts,
                        self.subject,
                        f'{self.head}{ip}","method":"GET","path":"/v1/account","status":200,'
                        f'"latency_ms":{round(12.0 * _LOGN[rng.getrandbits(12)], 1)!r},"user_agent":"{agent}",'
                        f'"request_id":"req_{rng.getrandbits(64):016x}"}}',
                    )
                )
        if n == 0:
            return
        hosts = [h.ip for h in app.hosts_at(minute)]
        if not hosts:
            return
        times = self.times(minute, n)
        lo, hi = key.traffic_start_ms, key.traffic_end_ms
        if times[0] < lo or times[-1] >= hi:
            times = [t for t in times if lo <= t < hi]
        self.emit(times, hosts, app.agent_at(minute), out)


class _Spike(_KeyTraffic):
    """The extra requests of a spike: in total max(factor x normal, the spike's floor) per minute."""

    def __init__(self, incident: Incident, plan: Plan) -> None:
        # A runaway loop hammers one or two endpoints that succeed: few errors.
        super().__init__(incident.key, plan, f"spike/{incident.id}", p4xx=0.002, endpoints=2)
        self.incident = incident
        self.first, self.last = incident.start_ms, incident.end_ms
        app = incident.key.app
        self.hosts = [h.ip for h in app.hosts_at(incident.start_ms)][:2] or [app.hosts[0].ip]

    def minute(self, minute: int, out: list[Item]) -> None:
        """Append the spike's extra requests of one minute."""
        normal = self.key.normal_rate(minute + MINUTE_MS // 2, self.scale)
        extra = max(self.incident.spike_factor * normal, self.incident.spike_floor) - normal
        times = self.times(minute, poisson(self.rng, extra))
        self.emit(times, self.hosts, self.key.app.agent_at(minute), out)


def iter_minutes(plan: Plan) -> Iterator[tuple[int, list[Item]]]:
    """Every minute of the scenario with its requests, sorted by event time (ties: stable, by source)."""
    c = plan.config
    sources: list[_Baseline | _Spike] = [_Baseline(key, plan) for key in plan.keys]
    # A spike has a rate; a label without records or rate (a hygiene situation) adds no traffic.
    sources += [_Spike(i, plan) for i in plan.incidents if not i.records and i.type == SPIKE]
    fixed: dict[int, list[Item]] = {}
    for records in [i.records for i in plan.incidents if i.records] + [records for _, records in plan.extra]:
        for ts, req in records:
            fixed.setdefault(ts - ts % MINUTE_MS, []).append((ts, f"{req[0]}/{req[1]}", request_rest(req)))
    by_ts = itemgetter(0)
    # Materialised history before the scenario (a request log that starts earlier for some tenants).
    for minute in sorted(m for m in fixed if m < c.start_ms):
        yield minute, sorted(fixed[minute], key=by_ts)
    for minute in range(c.start_ms, c.end_ms, MINUTE_MS):
        out: list[Item] = []
        for source in sources:
            if source.first <= minute < source.last:
                source.minute(minute, out)
        out.extend(fixed.get(minute, ()))
        out.sort(key=by_ts)
        yield minute, out


def disorder_rng(seed: int) -> random.Random:
    """The delays of `displace` for a scenario: from its seed, apart from the scenario's own draws (so the
    records are the same with and without disorder, only their order differs)."""
    return seeded(f"{seed}/disorder")


def displace(items: Iterable[tuple[int, T]], max_ms: int, rng: random.Random) -> Iterator[tuple[int, T]]:
    """`items` (in event-time order) delivered out of order: each one delayed by a random 0..`max_ms`, as if it
    travelled through a slow gateway; no item comes more than `max_ms` after one with a later event time.

    Holds only the items of the last `max_ms` of event time. `max_ms` 0: the items as they are.
    """
    if max_ms <= 0:
        yield from items
        return
    held: list[tuple[int, int, int, T]] = []  # (release time, sequence, event time, item)
    for sequence, (ts, item) in enumerate(items):
        # Later items have event times >= ts, so releases <= ts can no longer be overtaken.
        while held and held[0][0] <= ts:
            _, _, at, out = heapq.heappop(held)
            yield at, out
        heapq.heappush(held, (ts + rng.randint(0, max_ms), sequence, ts, item))
    while held:
        _, _, at, out = heapq.heappop(held)
        yield at, out


def iter_requests(plan: Plan) -> Iterator[Item]:
    """All requests of the scenario in event-time order."""
    for _, batch in iter_minutes(plan):
        yield from batch


def iter_events(plan: Plan, shift_ms: int = 0, disorder_ms: int = 0) -> Iterator[tuple[int, Kind, str, bytes]]:
    """Lifecycle events and requests interleaved in event-time order (lifecycle first on a tie), as
    (ts_ms, kind, subject, JSON value); every time is moved by `shift_ms` (re-timing for a live feed).
    `disorder_ms` > 0: out of order by up to that much (`displace`)."""
    if disorder_ms > 0:
        ordered = ((ts, (kind, subject, value)) for ts, kind, subject, value in iter_events(plan, shift_ms))
        for ts, (kind, subject, value) in displace(ordered, disorder_ms, disorder_rng(plan.config.seed)):
            yield ts, kind, subject, value
        return
    lifecycle = [(ts, ev) for ts, ev in plan.lifecycle if ts < plan.config.end_ms]
    fmt = TimeFormatter()
    i = 0
    for _, batch in iter_minutes(plan):
        for ts, subject, rest in batch:
            while i < len(lifecycle) and lifecycle[i][0] <= ts:
                event_ts, event = lifecycle[i]
                event_subject = f"{event['tenant']}/{event['key_id']}"
                yield event_ts + shift_ms, "lifecycle", event_subject, encode_lifecycle(event_ts + shift_ms, event, fmt)
                i += 1
            yield ts + shift_ms, "request", subject, f'{{"ts":"{fmt(ts + shift_ms)}{rest}'.encode()
    for event_ts, event in lifecycle[i:]:
        event_subject = f"{event['tenant']}/{event['key_id']}"
        yield event_ts + shift_ms, "lifecycle", event_subject, encode_lifecycle(event_ts + shift_ms, event, fmt)


@dataclass(slots=True)
class Summary:
    """What was generated."""

    requests: int = 0
    lifecycle: dict[str, int] = field(default_factory=dict)
    incidents: dict[str, int] = field(default_factory=dict)
    keys: int = 0
    keys_live: int = 0
    tenants: int = 0
    benign: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "requests": self.requests,
            "lifecycle": self.lifecycle,
            "incidents": self.incidents,
            "keys": self.keys,
            "keys_live": self.keys_live,
            "tenants": self.tenants,
            "benign": self.benign,
            "seconds": round(self.seconds, 2),
        }


def summarize_plan(plan: Plan) -> Summary:
    """The parts of the summary known before generating."""
    summary = Summary(keys=len(plan.keys), keys_live=sum(k.env == "live" for k in plan.keys), tenants=len(plan.tenants))
    for _, event in plan.lifecycle:
        summary.lifecycle[event["type"]] = summary.lifecycle.get(event["type"], 0) + 1
    for incident in plan.incidents:
        summary.incidents[incident.type] = summary.incidents.get(incident.type, 0) + 1
    summary.benign = dict(plan.benign)
    return summary


Progress = Callable[[int, int], None]  # (records so far, current event time ms)


def _write_displaced(
    plan: Plan,
    fh: Any,
    fmt: TimeFormatter,
    disorder_ms: int,
    rng: random.Random,
    progress: Progress | None,
    every: int,
) -> int:
    """requests.jsonl out of order by up to `disorder_ms`: one line at a time (the sorted path writes minutes)."""
    count = 0
    stream = ((ts, rest) for _, batch in iter_minutes(plan) for ts, _, rest in batch)
    for ts, rest in displace(stream, disorder_ms, rng):
        fh.write(f'{{"ts":"{fmt(ts)}{rest}\n')
        count += 1
        if progress is not None and count % every == 0:
            progress(count, ts)
    return count


def write_outputs(
    plan: Plan,
    out_dir: Path,
    progress: Progress | None = None,
    every: int = 250_000,
    disorder_ms: int = 0,
) -> Summary:
    """Write requests.jsonl, lifecycle.jsonl, labels.jsonl, networks.json and scenario.json into `out_dir`.

    `disorder_ms` > 0: requests.jsonl and lifecycle.jsonl are out of order by up to that much (`displace`).
    """
    began = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = TimeFormatter()
    summary = summarize_plan(plan)
    rng = disorder_rng(plan.config.seed)
    with (out_dir / "lifecycle.jsonl").open("wb") as fh:
        for ts, event in displace(plan.lifecycle, disorder_ms, rng):
            fh.write(encode_lifecycle(ts, event, fmt) + b"\n")
    with (out_dir / "labels.jsonl").open("wb") as fh:
        for incident in plan.incidents:
            fh.write(orjson.dumps(incident.label(fmt)) + b"\n")
    (out_dir / "networks.json").write_bytes(orjson.dumps(plan.networks, option=orjson.OPT_INDENT_2) + b"\n")
    count = 0
    with (out_dir / "requests.jsonl").open("w", encoding="ascii", buffering=1 << 20) as fh:
        if disorder_ms > 0:
            count = _write_displaced(plan, fh, fmt, disorder_ms, rng, progress, every)
        for minute, batch in iter_minutes(plan) if disorder_ms <= 0 else ():
            if not batch:
                continue
            prefix = '{"ts":"' + fmt.prefix(minute // MINUTE_MS)
            fh.write("".join([prefix + _SECONDS[ts - minute] + rest + "\n" for ts, _, rest in batch]))
            before = count
            count += len(batch)
            if progress is not None and count // every != before // every:
                progress(count, minute)
    summary.requests = count
    summary.seconds = time.monotonic() - began
    config = plan.config
    disorder = {"disorder_seconds": disorder_ms / 1000} if disorder_ms > 0 else {}
    scenario = {
        "config": {
            "seed": config.seed,
            "days": config.days,
            "tenants": config.tenants,
            "keys": config.keys,
            "start": fmt(config.start_ms),
            "end": fmt(config.end_ms),
            "learning_end": fmt(config.learning_end_ms),
            "scale": config.scale,
            "incidents_per_type": config.per_type,
            **disorder,
        },
        "summary": summary.as_dict(),
    }
    (out_dir / "scenario.json").write_bytes(orjson.dumps(scenario, option=orjson.OPT_INDENT_2) + b"\n")
    return summary
