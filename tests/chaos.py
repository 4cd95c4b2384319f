"""The chaos soak's pure parts (`scripts/reliability-report --chaos`): its input, its kill schedule and the
comparison of the alert ids two workers emitted through the kills with the ids `keywatch replay` emits.

The input: every key is created, learns `networks` /24 ranges of its own over 26 hours of event time (the IP
detector learns for 24 h and 50 requests), one in eight keys is then revoked, and afterwards every key keeps
using its learned ranges, with two new ranges among them. A worker that lost a key's state would see its
learned ranges as new (extra usedFromNewIp alerts) or forget a revocation or a learned baseline (missing
alerts); lost records show as missing alerts.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.factories import as_bytes, lifecycle_dict, request_dict

HISTORY_REQUESTS = 60  # per key: > learning_requests (50), spread over 26 h > learning_seconds (24 h)
HISTORY_SPAN = timedelta(hours=26)
REVOKE_AT = timedelta(hours=26, minutes=30)
LIVE_START = timedelta(hours=27)
LIVE_SPAN = timedelta(hours=6)
REVOKE_EVERY = 8
NEW_RANGES = 2  # per key, in the live phase: each is one expected usedFromNewIp

Record = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class AlertIdComparison:
    """What the worker emitted against what replay emits: ids missing, ids extra, and re-emissions."""

    expected: int
    emitted: int
    missing: frozenset[str]
    extra: frozenset[str]
    duplicates: int  # emissions of an id beyond its first (at-least-once allows them)

    @property
    def ok(self) -> bool:
        """Nothing missing and nothing extra: duplicates alone are no failure."""
        return not self.missing and not self.extra


def compare_alert_ids(expected_ids: Iterable[str], emitted_ids: Iterable[str]) -> AlertIdComparison:
    """Compare the ids replay emits (`expected_ids`, a set) with every id the worker emitted, in any order."""
    expected = frozenset(expected_ids)
    counts = Counter(emitted_ids)
    emitted = frozenset(counts)
    return AlertIdComparison(
        expected=len(expected),
        emitted=sum(counts.values()),
        missing=expected - emitted,
        extra=emitted - expected,
        duplicates=sum(n - 1 for n in counts.values()),
    )


@dataclass(slots=True)
class Segment:
    """Consecutive records of one input topic ("requests" or "lifecycle"), keyed by subject, in event-time order."""

    topic: str
    records: list[Record] = field(default_factory=list)


@dataclass(slots=True)
class SoakInput:
    """The soak's records as the worker is fed them (segments) and as replay reads them (two JSONL files)."""

    keys: int
    segments: list[Segment]

    @property
    def records(self) -> int:
        """Input records in all."""
        return sum(len(s.records) for s in self.segments)

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """requests.jsonl and lifecycle.jsonl, each in event-time order, for `keywatch replay`."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"requests": out_dir / "requests.jsonl", "lifecycle": out_dir / "lifecycle.jsonl"}
        lines: dict[str, list[bytes]] = {"requests": [], "lifecycle": []}
        for segment in self.segments:
            lines[segment.topic].extend(value for _, value in segment.records)
        for topic, path in paths.items():
            path.write_bytes(b"".join(line + b"\n" for line in lines[topic]))
        return paths["requests"], paths["lifecycle"]


def _home_ip(key: int, network: int, networks: int, host: int) -> str:
    index = key * networks + network  # a /24 of its own for each network of each key
    return f"10.{(index // 256) % 256}.{index % 256}.{1 + host % 200}"


def build_soak_input(
    *, keys: int, live_requests: int, networks: int = 12, tenants: int = 5, seed: int = 1, now: datetime | None = None
) -> SoakInput:
    """The soak's input for `keys` keys with `networks` learned ranges each and `live_requests` requests per key
    after learning; event times end well before `now` (the worker dead-letters records from the future)."""
    if networks * keys > 65536:
        raise ValueError(f"{keys} keys x {networks} networks do not fit in 10.0.0.0/8 as distinct /24 ranges")
    if live_requests < 3 * NEW_RANGES:
        raise ValueError(f"live_requests must be at least {3 * NEW_RANGES}")
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    t0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=3)

    def ts(delta: timedelta) -> str:
        return (t0 + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    created, revoked = Segment("lifecycle"), Segment("lifecycle")
    history: list[tuple[timedelta, Record]] = []
    live: list[tuple[timedelta, Record]] = []
    history_step = HISTORY_SPAN / HISTORY_REQUESTS
    live_step = LIVE_SPAN / live_requests
    new_at = {live_requests * (n + 1) // (NEW_RANGES + 1): n for n in range(NEW_RANGES)}
    for i in range(keys):
        tenant, kid = f"t{i % tenants}", f"ck_{i}"
        subject = f"{tenant}/{kid}".encode()
        offset = timedelta(seconds=(i * 7) % 60, milliseconds=i % 1000)  # keys do not all tick together
        created.records.append((subject, as_bytes(lifecycle_dict(tenant=tenant, key_id=kid, ts=ts(timedelta())))))
        for j in range(HISTORY_REQUESTS):
            at = timedelta(minutes=1) + j * history_step + offset
            ip = _home_ip(i, j % networks, networks, j)
            rec = request_dict(tenant=tenant, key_id=kid, ip=ip, ts=ts(at), request_id=f"h{i}-{j}")
            history.append((at, (subject, as_bytes(rec))))
        if i % REVOKE_EVERY == 0:
            event = lifecycle_dict(type="apiKey.revoked", tenant=tenant, key_id=kid, ts=ts(REVOKE_AT))
            revoked.records.append((subject, as_bytes(event)))
        for j in range(live_requests):
            at = LIVE_START + j * live_step + offset
            if j in new_at:
                ip = f"172.{16 + new_at[j]}.{i % 250}.9"
            else:
                ip = _home_ip(i, rng.randrange(networks), networks, rng.randrange(200))
            status = 404 if rng.random() < 0.02 else 200
            rec = request_dict(tenant=tenant, key_id=kid, ip=ip, ts=ts(at), status=status, request_id=f"l{i}-{j}")
            live.append((at, (subject, as_bytes(rec))))
    history.sort(key=lambda t: t[0])
    live.sort(key=lambda t: t[0])
    segments = [
        created,
        Segment("requests", [r for _, r in history]),
        revoked,
        Segment("requests", [r for _, r in live]),
    ]
    return SoakInput(keys=keys, segments=[s for s in segments if s.records])


def kill_schedule(*, seed: int, kills: int, span_s: float, workers: int = 2) -> list[tuple[float, int]]:
    """`kills` (seconds after the input starts flowing, which worker) drawn from `seed`: random times within
    the middle 80 % of `span_s`, in order."""
    rng = random.Random(seed)
    times = sorted(rng.uniform(0.1 * span_s, 0.9 * span_s) for _ in range(kills))
    return [(round(t, 2), rng.randrange(workers)) for t in times]
