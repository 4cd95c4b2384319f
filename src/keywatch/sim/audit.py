"""Check a generated scenario against the honesty rules: every label is detectable from the records, and
no unlabelled stretch of traffic crosses the same thresholds.

The thresholds are the scenario's promises, not a detector: a detector may be stricter or looser.
- new network: a request from an IPv4 /24 or IPv6 /64 the key (or the key it replaced) never used, on a key
  that is at least `LEARNING_MS` old; on a younger key, one whose IPv4 /16 or IPv6 /32 no other key of the
  tenant used before, once the tenant has a day of history in that address family;
- spike: a minute with >= 100 requests and >= 10x the key's mean for that hour of day in the learning days
  (if the history has no such hour: its busiest hour);
- 4xx cluster: >= 50 responses with one of 401/403/404 within 5 minutes;
- used after revoke: a request more than 5 minutes after the key's revocation;
- environment mismatch: a request of a key from an IPv4 /24 or IPv6 /64 whose first user in the data was a key
  of the tenant's other environment (once per key, range and UTC day).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from keywatch.sim.labels import Label, read_labels
from keywatch.sim.scenario import (
    AFTER_REVOKE,
    DAY_MS,
    ENV_MISMATCH,
    ERROR_CLUSTER,
    HOUR_MS,
    KEY_HISTORY_MS,
    MINUTE_MS,
    NEW_IP,
    SPIKE,
)

SPIKE_FACTOR = 10.0
SPIKE_FLOOR = 100
CLUSTER_FLOOR = 50
CLUSTER_WINDOW_MINUTES = 5
REVOKE_GRACE_MS = 5 * MINUTE_MS
LEARNING_MS = KEY_HISTORY_MS  # a key younger than this is still learning its networks


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def network_of(ip: str) -> str:
    """The range an address is compared by: IPv4 /24, IPv6 /64."""
    addr = ipaddress.ip_address(ip)
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _wide(ip: str) -> str:
    """The network a range folds into without GeoIP: IPv4 /16, IPv6 /32."""
    prefix = 32 if ":" in ip else 16
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(slots=True)
class Finding:
    """A stretch of data that crosses a threshold."""

    type: str
    subject: str
    ts_ms: int
    detail: str
    label: str | None = None


@dataclass(slots=True)
class AuditReport:
    """Findings, labels confirmed by the data, and labels the data does not support."""

    confirmed: dict[str, str] = field(default_factory=dict)  # label id -> evidence
    unsupported: dict[str, str] = field(default_factory=dict)  # label id -> why
    unlabelled: list[Finding] = field(default_factory=list)
    grace_requests: int = 0  # requests on revoked keys within the grace period (benign in-flight)

    @property
    def ok(self) -> bool:
        """Every label is supported and nothing unlabelled crosses a threshold."""
        return not self.unsupported and not self.unlabelled

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "ok": self.ok,
            "confirmed": len(self.confirmed),
            "unsupported": self.unsupported,
            "unlabelled": [_finding(f) for f in self.unlabelled],
            "grace_requests": self.grace_requests,
        }


def _finding(f: Finding) -> dict[str, Any]:
    return {"type": f.type, "subject": f.subject, "ts_ms": f.ts_ms, "detail": f.detail}


def audit(out_dir: Path, learning_end_ms: int) -> AuditReport:
    """Audit the scenario files in `out_dir` (requests.jsonl, lifecycle.jsonl, labels.jsonl)."""
    labels = read_labels(out_dir / "labels.jsonl")
    lifecycle = [orjson.loads(line) for line in (out_dir / "lifecycle.jsonl").read_bytes().splitlines() if line]
    with (out_dir / "requests.jsonl").open("rb") as fh:
        return audit_records((orjson.loads(line) for line in fh), lifecycle, labels, learning_end_ms)


def audit_records(
    requests: Iterable[dict[str, Any]], lifecycle: list[dict[str, Any]], labels: list[Label], learning_end_ms: int
) -> AuditReport:
    """Audit parsed records (requests in event-time order)."""
    report = AuditReport()
    by_subject: dict[str, list[Label]] = defaultdict(list)
    for label in labels:
        by_subject[label.subject].append(label)
    created: dict[str, int] = {}
    revoked: dict[str, int] = {}
    predecessor: dict[str, str] = {}
    for event in lifecycle:
        subject = f"{event['tenant']}/{event['key_id']}"
        if event["type"] == "apiKey.created":
            created.setdefault(subject, _ms(event["ts"]))
            if event.get("replaces_key_id"):
                predecessor[subject] = f"{event['tenant']}/{event['replaces_key_id']}"
        elif event["type"] == "apiKey.revoked":
            revoked.setdefault(subject, _ms(event["ts"]))

    def label_for(kind: str, subject: str, ts: int, slack: int = 0) -> Label | None:
        for label in by_subject.get(subject, ()):
            start, end = _ms_of(label.start), _ms_of(label.end)
            if label.type == kind and start - slack <= ts <= end + slack:
                return label
        return None

    networks: dict[str, set[str]] = defaultdict(set)
    net_cache: dict[str, str] = {}
    minute_counts: dict[tuple[str, int], int] = defaultdict(int)
    error_counts: dict[tuple[str, int, int], int] = defaultdict(int)
    first_seen: dict[str, int] = {}
    tenant_nets: dict[tuple[str, str], set[str]] = {}  # (tenant, /16 or /32) -> keys that used it
    tenant_family: dict[tuple[str, bool], int] = {}  # (tenant, IPv6?) -> its first request of that family
    range_env: dict[tuple[str, str], str] = {}  # (tenant, range) -> the environment that used it first
    mismatched: set[tuple[str, str, int]] = set()
    for rec in requests:
        subject = f"{rec['tenant']}/{rec['key_id']}"
        ts = _ms(rec["ts"])
        first_seen.setdefault(subject, ts)
        ip = rec["ip"]
        net = net_cache.get(ip)
        if net is None:
            net = net_cache[ip] = network_of(ip)
        known = networks[subject]
        if net not in known:
            prev = predecessor.get(subject)
            inherited = prev is not None and net in networks.get(prev, set())
            born = created.get(subject, first_seen[subject])
            wide = _wide(ip)
            users = tenant_nets.setdefault((rec["tenant"], wide), set())
            family = tenant_family.get((rec["tenant"], ":" in ip))
            new_to_tenant = not (users - {subject}) and family is not None and ts - family >= DAY_MS
            mature = ts - born >= LEARNING_MS
            if ts >= learning_end_ms and not inherited and (mature or new_to_tenant):
                hit = label_for(NEW_IP, subject, ts)
                if hit is not None:
                    report.confirmed.setdefault(hit.id, f"first request from new network {net}")
                else:
                    report.unlabelled.append(Finding(NEW_IP, subject, ts, f"new network {net}"))
            known.add(net)
            users.add(subject)
            tenant_family.setdefault((rec["tenant"], ":" in ip), ts)
        env = rec["env"]
        owner = range_env.setdefault((rec["tenant"], net), env)
        if owner != env and (subject, net, ts // DAY_MS) not in mismatched:
            mismatched.add((subject, net, ts // DAY_MS))
            hit = label_for(ENV_MISMATCH, subject, ts)
            if hit is not None:
                report.confirmed.setdefault(hit.id, f"{env} key on a {owner} range {net}")
            else:
                report.unlabelled.append(Finding(ENV_MISMATCH, subject, ts, f"{env} key on a {owner} range {net}"))
        minute = ts // MINUTE_MS
        minute_counts[subject, minute] += 1
        status = rec["status"]
        if status in (401, 403, 404):
            error_counts[subject, status, minute] += 1
        revoked_at = revoked.get(subject)
        if revoked_at is not None and ts > revoked_at:
            if ts > revoked_at + REVOKE_GRACE_MS:
                hit = label_for(AFTER_REVOKE, subject, ts)
                if hit is not None:
                    report.confirmed.setdefault(hit.id, f"request {(ts - revoked_at) / 60000:.1f} min after revoke")
                else:
                    report.unlabelled.append(Finding(AFTER_REVOKE, subject, ts, "request after revoke + 5 min"))
            else:
                report.grace_requests += 1
    _audit_spikes(report, minute_counts, learning_end_ms, label_for, by_subject, predecessor)
    _audit_errors(report, error_counts, label_for)
    for label in labels:
        if label.id not in report.confirmed and label.id not in report.unsupported:
            report.unsupported[label.id] = "no record in the data crosses the threshold for this label"
    # collapse unlabelled findings to one per (type, subject) and hour, for readability
    seen: set[tuple[str, str, int]] = set()
    collapsed = []
    for f in sorted(report.unlabelled, key=lambda f: f.ts_ms):
        k = (f.type, f.subject, f.ts_ms // HOUR_MS)
        if k not in seen:
            seen.add(k)
            collapsed.append(f)
    report.unlabelled = collapsed
    return report


def _ms_of(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _audit_spikes(
    report: AuditReport,
    minute_counts: dict[tuple[str, int], int],
    learning_end_ms: int,
    label_for: Any,
    by_subject: dict[str, list[Label]],
    predecessor: dict[str, str],
) -> None:
    # The baseline of a key is its mean for that hour of day over the learning days, plus that of the key it
    # replaced (the traffic moved over). A key with no history at all for that hour is still learning: skipped.
    learn_end_minute = learning_end_ms // MINUTE_MS
    history: dict[tuple[str, int], int] = defaultdict(int)
    days: dict[str, set[int]] = defaultdict(set)
    for (subject, minute), count in minute_counts.items():
        if minute < learn_end_minute:
            history[subject, (minute // 60) % 24] += count
            days[subject].add(minute // 1440)
    spike_minutes: dict[str, list[int]] = defaultdict(list)
    for (subject, minute), count in minute_counts.items():
        if minute < learn_end_minute or count < SPIKE_FLOOR:
            continue
        hour = (minute // 60) % 24
        chain = [subject]
        while chain[-1] in predecessor and len(chain) < 10:
            chain.append(predecessor[chain[-1]])
        n_days = len(set().union(*(days.get(s, set()) for s in chain)))
        total = sum(history.get((s, hour), 0) for s in chain)
        if not n_days:
            continue  # no history at all: still learning
        if any((s, hour) in history for s in chain):
            baseline = total / (60 * n_days)
        else:  # a short history without this hour: compare with its busiest hour (stricter)
            baseline = max(sum(history.get((s, h), 0) for s in chain) for h in range(24)) / (60 * n_days)
        if count >= SPIKE_FACTOR * baseline:
            ts = minute * MINUTE_MS
            label = label_for(SPIKE, subject, ts, MINUTE_MS)
            if label is not None:
                spike_minutes[label.id].append(minute)
            else:
                report.unlabelled.append(
                    Finding(SPIKE, subject, ts, f"{count}/min vs baseline {baseline:.1f}/min for that hour")
                )
    for labels in by_subject.values():
        for label in labels:
            if label.type != SPIKE:
                continue
            start, end = _ms_of(label.start) // MINUTE_MS, _ms_of(label.end) // MINUTE_MS
            expected = set(range(start, end))
            got = set(spike_minutes.get(label.id, ()))
            if expected and expected <= got:
                report.confirmed[label.id] = f"{len(expected)} minutes >= {SPIKE_FLOOR}/min and >= 10x baseline"
            else:
                report.unsupported[label.id] = (
                    f"only {len(got & expected)}/{len(expected)} minutes cross the spike rule"
                )


def _audit_errors(report: AuditReport, error_counts: dict[tuple[str, int, int], int], label_for: Any) -> None:
    per_series: dict[tuple[str, int], dict[int, int]] = defaultdict(dict)
    for (subject, status, minute), count in error_counts.items():
        per_series[subject, status][minute] = count
    for (subject, status), minutes in per_series.items():
        for minute in sorted(minutes):
            window = sum(minutes.get(m, 0) for m in range(minute - CLUSTER_WINDOW_MINUTES + 1, minute + 1))
            if window < CLUSTER_FLOOR:
                continue
            ts = minute * MINUTE_MS
            label = label_for(ERROR_CLUSTER, subject, ts, CLUSTER_WINDOW_MINUTES * MINUTE_MS)
            if label is not None:
                report.confirmed.setdefault(label.id, f"{window} x {status} within {CLUSTER_WINDOW_MINUTES} min")
            else:
                report.unlabelled.append(Finding(ERROR_CLUSTER, subject, ts, f"{window} x {status} in 5 min"))
