"""Check a generated scenario against the honesty rules: every label is detectable from the records, and
no unlabelled stretch of traffic crosses the same thresholds.

The thresholds are the scenario's promises, not a detector: a detector may be stricter or looser.
- new network: a request from an IPv4 /24 or IPv6 /64 the key (or the key it replaced) never used, on a key
  that is at least `LEARNING_MS` old (within a day after a usedFromNewIp label of the key, further new ranges
  are the same incident: alerts are folded per network and fanned out into one, at most three a day); on a
  younger key, one whose IPv4 /16 or IPv6 /32 no other key of the tenant used before, once the tenant has a day
  of history in that address family;
- spike: a minute with >= 100 requests and >= 10x the key's mean for that hour of day in the learning days
  (if the history has no such hour: its busiest hour);
- 4xx cluster: >= 50 responses with one of 401/403/404 within 5 minutes;
- used after revoke: a request more than 5 minutes after the key's revocation;
- used from a browser: the first request of a UTC day with an `origin` or `sec_fetch_*` header, or a
  Mozilla/5.0 user agent with a browser engine and no bot, headless or `compatible` marker;
- key management: a request whose path, without query, percent-decoded, slashes collapsed, is a key-management
  path (`KEY_MANAGEMENT_PATH`).
- privilege escalation: a scope change to a role ranking above the key's role just before it, or a rotation's new
  key ranking above the key it replaces (ranks from the role names, `keywatch.core.roles`);
- managed outside the portal: a lifecycle event with a `channel` other than `portal` or `mfa` false;
- lifecycle burst: one actor with 5 lifecycle operations in one tenant within 10 minutes (a tenant label).
- rotation overdue: a request of an active key at least `OVERDUE_AGE_MS` after its creation event, with no
  replacement (a key created with replaces_key_id = it) a day old (labels may start up to a week before it: a
  reminder period starts when the key was used within the week before);
- unused: an active key without a request for `IDLE_MS` since its last request, or since the later of its
  creation and its tenant's first request if never used, before the end of the data.
- revoked while in use: >= 5 requests in the 15 minutes before a key's revocation;
- rotation stalled: a key created with `replaces_key_id` and no request in the 24 h after its creation while
  the key it replaces had one (and was not revoked by then), or the replaced key still serving >= 10 requests in
  the hour before the rotation's start + 72 h (and not revoked by then).
- environment mismatch: a request of a key from an IPv4 /24 or IPv6 /64 whose first user in the data was a key
  of the tenant's other environment (once per key, range and UTC day);
- shared across services: a key past its first day with, in 3 half-hour windows within 24 h, two services of
  >= 5 requests each: workloads (user-agent product, its first token without version; network, IPv4 /16 or
  IPv6 /32) that share a product or a network are one service.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson

from keywatch.core.roles import default_rank
from keywatch.core.rotation_age import RotationAgeConfig
from keywatch.core.unused import UnusedConfig
from keywatch.sim.labels import Label, read_labels
from keywatch.sim.scenario import (
    AFTER_REVOKE,
    DAY_MS,
    ENV_MISMATCH,
    ERROR_CLUSTER,
    FROM_BROWSER,
    HOUR_MS,
    KEY_HISTORY_MS,
    KEY_MANAGEMENT,
    KEY_MANAGEMENT_PATH,
    LIFECYCLE_BURST,
    MINUTE_MS,
    NEW_IP,
    OUTSIDE_PORTAL,
    PRIVILEGE,
    REVOKED_IN_USE,
    ROTATION_OVERDUE,
    ROTATION_STALLED,
    SHARED,
    SPIKE,
    UNUSED,
)

SPIKE_FACTOR = 10.0
SPIKE_FLOOR = 100
CLUSTER_FLOOR = 50
CLUSTER_WINDOW_MINUTES = 5
REVOKE_GRACE_MS = 5 * MINUTE_MS
LEARNING_MS = KEY_HISTORY_MS  # a key younger than this is still learning its networks
BURST_OPERATIONS = 5
BURST_WINDOW_MS = 10 * MINUTE_MS
OVERDUE_AGE_MS = int(float(RotationAgeConfig.model_fields["max_age_days"].default) * DAY_MS)
OVERDUE_REPEAT_MS = int(float(RotationAgeConfig.model_fields["repeat_days"].default) * DAY_MS)
IDLE_MS = int(float(UnusedConfig.model_fields["idle_days"].default) * DAY_MS)
IN_USE_REQUESTS = 5
IN_USE_WINDOW_MINUTES = 15
NEW_KEY_GRACE_MS = 24 * HOUR_MS
ROLLOUT_MS = 72 * HOUR_MS
STILL_SERVING_PER_HOUR = 10


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


_ENGINES = ("applewebkit", "gecko", "trident")
_NOT_BROWSERS = ("bot", "headless", "(compatible", "python", "curl")


def is_browser(rec: dict[str, Any]) -> bool:
    """Whether a request record has browser provenance (by the scenario's promise, not the detector's lists)."""
    if rec.get("origin") or rec.get("sec_fetch_site") or rec.get("sec_fetch_mode"):
        return True
    agent = str(rec.get("user_agent") or "").lower()
    return "mozilla/5.0" in agent and any(e in agent for e in _ENGINES) and not any(n in agent for n in _NOT_BROWSERS)


def is_key_management(path: str) -> bool:
    """Whether a logged path is a key-management path once normalised as a router would."""
    plain = re.sub(r"/{2,}", "/", unquote(path.split("?", 1)[0]))
    return KEY_MANAGEMENT_PATH.search(plain) is not None  # case-insensitive


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
    replaced: dict[str, int] = {}  # key -> creation of its replacement
    for event in lifecycle:
        subject = f"{event['tenant']}/{event['key_id']}"
        if event["type"] == "apiKey.created":
            created.setdefault(subject, _ms(event["ts"]))
            if event.get("replaces_key_id"):
                predecessor[subject] = f"{event['tenant']}/{event['replaces_key_id']}"
                old = predecessor[subject]
                replaced[old] = min(replaced.get(old, _ms(event["ts"])), _ms(event["ts"]))
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
    workloads: dict[tuple[str, int], dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    browser_days: set[tuple[str, int]] = set()
    last_seen: dict[str, int] = {}
    tenant_first: dict[str, int] = {}
    end_ms = 0
    tenant_nets: dict[tuple[str, str], set[str]] = {}  # (tenant, /16 or /32) -> keys that used it
    tenant_family: dict[tuple[str, bool], int] = {}  # (tenant, IPv6?) -> its first request of that family
    range_env: dict[tuple[str, str], str] = {}  # (tenant, range) -> the environment that used it first
    mismatched: set[tuple[str, str, int]] = set()
    for rec in requests:
        subject = f"{rec['tenant']}/{rec['key_id']}"
        ts = _ms(rec["ts"])
        first_seen.setdefault(subject, ts)
        tenant_first.setdefault(rec["tenant"], ts)
        _audit_idle(report, subject, ts, last_seen.get(subject), label_for)
        last_seen[subject] = ts
        end_ms = max(end_ms, ts)
        born = created.get(subject)
        active = ts < revoked.get(subject, ts + 1) and ts - replaced.get(subject, ts) < DAY_MS
        if born is not None and ts - born >= OVERDUE_AGE_MS and active:
            hit = label_for(ROTATION_OVERDUE, subject, ts, OVERDUE_REPEAT_MS)
            if hit is not None:
                report.confirmed.setdefault(hit.id, f"request {(ts - born) / DAY_MS:.0f} days after creation")
            else:
                report.unlabelled.append(Finding(ROTATION_OVERDUE, subject, ts, "request of a key past its age"))
        ip = rec["ip"]
        net = net_cache.get(ip)
        if net is None:
            net = net_cache[ip] = network_of(ip)
        known = networks[subject]
        if net not in known:
            prev = predecessor.get(subject)
            inherited = prev is not None and net in networks.get(prev, set())
            born = first_seen[subject]  # a key learns from its first request (created long before or not)
            wide = _wide(ip)
            users = tenant_nets.setdefault((rec["tenant"], wide), set())
            family = tenant_family.get((rec["tenant"], ":" in ip))
            new_to_tenant = not (users - {subject}) and family is not None and ts - family >= DAY_MS
            mature = ts - born >= LEARNING_MS
            if ts >= learning_end_ms and not inherited and (mature or new_to_tenant):
                hit = label_for(NEW_IP, subject, ts)
                if hit is not None:
                    report.confirmed.setdefault(hit.id, f"first request from new network {net}")
                elif not any(
                    lb.type == NEW_IP and _ms_of(lb.start) <= ts <= _ms_of(lb.end) + DAY_MS
                    for lb in by_subject.get(subject, ())
                ):
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
        _audit_hygiene(report, rec, subject, ts, browser_days, label_for)
        agent = rec.get("user_agent") or "-"
        product = agent.split("/", 1)[0].split(" ", 1)[0].lower()
        if product != "mozilla":
            wide = ip.rsplit(".", 2)[0] if ":" not in ip else ":".join(ip.split(":")[:2])
            workloads[subject, ts // SHARING_WINDOW_MS][product, wide] += 1
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
    _audit_never_used(report, created, revoked, last_seen, tenant_first, end_ms, label_for)
    for subject, last in last_seen.items():
        _audit_idle(report, subject, end_ms, last, label_for, final=revoked.get(subject, end_ms + 1) > last + IDLE_MS)
    _audit_spikes(report, minute_counts, learning_end_ms, label_for, by_subject, predecessor)
    _audit_errors(report, error_counts, label_for)
    _audit_lifecycle(report, lifecycle, label_for)
    _audit_rotations(report, minute_counts, created, revoked, predecessor, label_for)
    _audit_sharing(report, workloads, first_seen, label_for)
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


def _audit_hygiene(
    report: AuditReport, rec: dict[str, Any], subject: str, ts: int, browser_days: set[tuple[str, int]], label_for: Any
) -> None:
    """The browser and key-management promises for one request."""
    if (subject, ts // DAY_MS) not in browser_days and is_browser(rec):
        browser_days.add((subject, ts // DAY_MS))
        hit = label_for(FROM_BROWSER, subject, ts)
        if hit is not None:
            report.confirmed.setdefault(hit.id, "first browser request of its UTC day")
        else:
            report.unlabelled.append(Finding(FROM_BROWSER, subject, ts, "browser request"))
    path = rec["path"]
    low = path.lower()
    if ("key" in low or "cred" in low or "token" in low or "%" in low) and is_key_management(path):
        hit = label_for(KEY_MANAGEMENT, subject, ts)
        if hit is not None:
            report.confirmed.setdefault(hit.id, f"key-management request {rec['method']} {path}")
        else:
            report.unlabelled.append(Finding(KEY_MANAGEMENT, subject, ts, f"key-management path {path}"))


def _audit_idle(
    report: AuditReport, subject: str, ts: int, last: int | None, label_for: Any, *, final: bool = True
) -> None:
    """A gap of more than `IDLE_MS` between two requests of a key (or its last request and the end of the data)."""
    if last is None or ts - last < IDLE_MS or not final:
        return
    hit = label_for(UNUSED, subject, last + IDLE_MS, MINUTE_MS)
    if hit is not None:
        report.confirmed.setdefault(hit.id, f"no request for {(ts - last) / DAY_MS:.0f} days after the last one")
    else:
        report.unlabelled.append(Finding(UNUSED, subject, last + IDLE_MS, "idle for idle_days after a request"))


def _audit_never_used(
    report: AuditReport,
    created: dict[str, int],
    revoked: dict[str, int],
    seen: dict[str, int],
    tenant_first: dict[str, int],
    end_ms: int,
    label_for: Any,
) -> None:
    """Keys created and never used, for `IDLE_MS` of their tenant's request log before the end of the data."""
    for subject, born in created.items():
        coverage = tenant_first.get(subject.split("/", 1)[0])
        if subject in seen or coverage is None:
            continue
        due = max(born, coverage) + IDLE_MS
        if due > end_ms or revoked.get(subject, due + 1) <= due:
            continue
        hit = label_for(UNUSED, subject, due, HOUR_MS)
        if hit is not None:
            report.confirmed.setdefault(hit.id, "never used for idle_days of coverage")
        else:
            report.unlabelled.append(Finding(UNUSED, subject, due, "never used for idle_days of coverage"))


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


def _audit_lifecycle(report: AuditReport, lifecycle: list[dict[str, Any]], label_for: Any) -> None:
    """Escalations, events outside the portal or without MFA, and lifecycle bursts, in event-time order."""
    events = sorted(lifecycle, key=lambda e: (_ms(e["ts"]), e["type"] != "apiKey.created"))
    roles: dict[str, str] = {}
    ops: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in events:
        subject, ts, role = f"{event['tenant']}/{event['key_id']}", _ms(event["ts"]), event["role"]
        before = roles.get(subject)
        if event["type"] == "apiKey.created" and event.get("replaces_key_id"):
            before = roles.get(f"{event['tenant']}/{event['replaces_key_id']}")
        if event["type"] != "apiKey.revoked":
            decided = event["type"] != "apiKey.created" or event.get("replaces_key_id")
            if decided and before is not None and default_rank(role) > default_rank(before):
                _check(report, label_for, PRIVILEGE, subject, ts, f"{before} -> {role}")
            roles[subject] = role
        channel, mfa = event.get("channel"), event.get("mfa")
        if (channel is not None and channel != "portal") or mfa is False:
            _check(report, label_for, OUTSIDE_PORTAL, subject, ts, f"channel {channel}, mfa {mfa}")
        times = ops[event["tenant"], event["actor"]]
        times.append(ts)
        recent = [t for t in times if t >= ts - BURST_WINDOW_MS]
        if len(recent) >= BURST_OPERATIONS:
            detail = f"{len(recent)} operations by {event['actor']} within 10 min"
            _check(report, label_for, LIFECYCLE_BURST, f"{event['tenant']}/", ts, detail)


def _check(report: AuditReport, label_for: Any, kind: str, subject: str, ts: int, detail: str) -> None:
    label = label_for(kind, subject, ts)
    if label is not None:
        report.confirmed.setdefault(label.id, detail)
    else:
        report.unlabelled.append(Finding(kind, subject, ts, detail))


def _audit_rotations(
    report: AuditReport,
    minute_counts: dict[tuple[str, int], int],
    created: dict[str, int],
    revoked: dict[str, int],
    predecessor: dict[str, str],
    label_for: Any,
) -> None:
    """Revocations of keys in use, and rotations whose new key is unused or whose old key still serves."""
    per_key: dict[str, dict[int, int]] = defaultdict(dict)
    for (subject, minute), count in minute_counts.items():
        per_key[subject][minute] = count
    last_minute = max((minute for _, minute in minute_counts), default=0)

    def requests(subject: str, start_ms: int, end_ms: int) -> int:
        minutes = per_key.get(subject, {})
        return sum(minutes.get(m, 0) for m in range(start_ms // MINUTE_MS, -(-end_ms // MINUTE_MS)))

    def check(kind: str, subject: str, ts: int, found: bool, detail: str) -> None:
        label = label_for(kind, subject, ts, MINUTE_MS)
        if found and label is not None:
            report.confirmed.setdefault(label.id, detail)
        elif found:
            report.unlabelled.append(Finding(kind, subject, ts, detail))

    for subject, at in revoked.items():
        n = requests(subject, at - IN_USE_WINDOW_MINUTES * MINUTE_MS, at)
        check(REVOKED_IN_USE, subject, at, n >= IN_USE_REQUESTS, f"{n} requests in the 15 min before revocation")
    for new, old in predecessor.items():
        start = created.get(new)
        if start is None:
            continue
        for deadline, kind in ((start + NEW_KEY_GRACE_MS, "unused"), (start + ROLLOUT_MS, "serving")):
            if deadline // MINUTE_MS > last_minute or revoked.get(old, deadline + 1) <= deadline:
                continue
            if kind == "unused":
                found = requests(new, start, deadline) == 0 and requests(old, deadline - 24 * HOUR_MS, deadline) > 0
                detail = "the new key unused 24 h after its creation while the old key serves"
            else:
                n = requests(old, deadline - HOUR_MS, deadline)
                found = n >= STILL_SERVING_PER_HOUR
                detail = f"the old key served {n} requests in the hour before creation + 72 h"
            check(ROTATION_STALLED, old, deadline, found, detail)


SHARING_WINDOW_MS = 30 * MINUTE_MS
SHARING_MIN_REQUESTS = 5
SHARING_MIN_WINDOWS = 3


def _services(workloads: list[tuple[str, str]]) -> int:
    """Services among (product, network) workloads: workloads sharing a product or a network are one service."""
    groups: list[tuple[set[str], set[str]]] = []
    for product, network in workloads:
        merged = ({product}, {network})
        rest = []
        for group in groups:
            if product in group[0] or network in group[1] or merged[0] & group[0] or merged[1] & group[1]:
                merged = (merged[0] | group[0], merged[1] | group[1])
            else:
                rest.append(group)
        groups = [*rest, merged]
    return len(groups)


def _audit_sharing(
    report: AuditReport,
    workloads: dict[tuple[str, int], dict[tuple[str, str], int]],
    first_seen: dict[str, int],
    label_for: Any,
) -> None:
    """Keys used by two workloads that differ in product and network in 3 half-hour windows within a day."""
    shared: dict[str, list[int]] = defaultdict(list)
    for (subject, window), seen in workloads.items():
        busy = [w for w, n in seen.items() if n >= SHARING_MIN_REQUESTS]
        if window * SHARING_WINDOW_MS < first_seen[subject] + DAY_MS:
            continue
        if _services(busy) >= 2:
            shared[subject].append(window)
    for subject, windows in shared.items():
        windows.sort()
        last_due = -DAY_MS
        for i in range(len(windows) - SHARING_MIN_WINDOWS + 1):
            first, third = windows[i], windows[i + SHARING_MIN_WINDOWS - 1]
            if (third - first) * SHARING_WINDOW_MS >= DAY_MS:
                continue
            due = (third + 1) * SHARING_WINDOW_MS
            if due - last_due < DAY_MS:
                continue
            last_due = due
            hit = label_for(SHARED, subject, due, SHARING_WINDOW_MS * 2)
            if hit is not None:
                report.confirmed.setdefault(hit.id, "two services active together in 3 half-hour windows")
            else:
                report.unlabelled.append(Finding(SHARED, subject, due, "two workloads in 3 half-hour windows"))
