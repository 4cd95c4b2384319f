"""Scoring alerts against labels: precision, recall and time to detect, per alert type.

An alert matches a label of the same type, tenant and key when
`label.start - tolerance <= alert.time <= label.end + tolerance`. Precision counts alerts (an alert that
matches any label is a true positive), recall counts labels (a label is detected when one alert matches it),
time to detect is the first matching alert's time minus the label's start, in event time.
Lifecycle alert types (apiKey.created, ...) and resolved episode ends are not scored.

Besides the scores: the (key, alert type, UTC day) groups with more than `NOISY_PER_DAY` alerts that no label
of that type and key explains (no label overlaps that day) — an operator should not see a key alert like that.
`sniff` tells what a file holds, so that a file given for the wrong option is named as such.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from keywatch.contract.alerts import Alert
from keywatch.parsing import describe_validation_error
from keywatch.sim.labels import Label
from keywatch.sim.scenario import INCIDENT_TYPES

SCORED_TYPES: tuple[str, ...] = INCIDENT_TYPES
DEFAULT_TOLERANCE_S = 300.0
NOISY_PER_DAY = 3  # more alerts than this of one type on one key in one UTC day need a label to explain them

# What `sniff` may find, and how messages name it.
FILE_KINDS = {
    "alerts": "alerts (CloudEvents with type apiKey.*)",
    "labels": "labels from `keywatch simulate` (labels.jsonl)",
    "lifecycle": "key lifecycle events (keywatch input, lifecycle.jsonl)",
    "requests": "request log records (keywatch input, requests.jsonl)",
    "empty": "nothing (the file is empty)",
    "not-json": "something that is not JSON lines",
    "unknown": "JSON of an unknown kind",
}


@dataclass(frozen=True, slots=True)
class FileKind:
    """What a JSONL file looks like it holds, judged by its first non-blank line."""

    kind: str
    line: int = 0
    detail: str = ""

    def describe(self) -> str:
        """E.g. "JSON of an unknown kind (keys a, b)"."""
        return FILE_KINDS[self.kind] + (f" ({self.detail})" if self.detail else "")


def sniff(path: Path) -> FileKind:
    """Tell alerts, labels, lifecycle events and request records apart by the first non-blank line."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                return _kind_of(line, number)
    return FileKind("empty")


def _kind_of(line: bytes, number: int) -> FileKind:
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return FileKind("not-json", number, exc.msg)
    if not isinstance(raw, dict):
        return FileKind("unknown", number, f"a JSON {type(raw).__name__}, not an object")
    kind = raw.get("type")
    typed = isinstance(kind, str) and kind.startswith("apiKey.")
    if "specversion" in raw and typed:
        return FileKind("alerts", number)
    if {"id", "type", "start", "end"} <= raw.keys():
        return FileKind("labels", number)
    if "ts" in raw and typed:
        return FileKind("lifecycle", number)
    if "ts" in raw and ("ip" in raw or "status" in raw):
        return FileKind("requests", number)
    keys = sorted(raw)[:6]  # shown JSON-escaped: a key may hold a newline or control characters
    return FileKind("unknown", number, "keys " + ", ".join(orjson.dumps(k).decode() for k in keys))


@dataclass(frozen=True, slots=True)
class ScoredAlert:
    """The parts of an alert that scoring looks at."""

    id: str
    type: str
    tenant: str
    key_id: str
    time: datetime
    summary: str

    @classmethod
    def of(cls, alert: Alert) -> ScoredAlert:
        """From a contract alert."""
        return cls(alert.id, alert.type, alert.data.tenant, alert.data.key_id or "", alert.time, alert.data.summary)


class AlertFileError(ValueError):
    """An alerts file line is not an alert; the message names the file and line."""


def read_alerts(path: Path) -> list[ScoredAlert]:
    """The scored alerts of an alerts JSONL file: firing alerts of the scored types only."""
    alerts: list[ScoredAlert] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise AlertFileError(f"{path}:{number}: not JSON: {exc.msg}") from None
            if not isinstance(raw, dict) or raw.get("type") not in SCORED_TYPES:
                continue
            try:
                alert = Alert.model_validate(raw)
            except ValidationError as exc:
                reason = describe_validation_error(exc).reason
                raise AlertFileError(f"{path}:{number}: not an alert: {reason}") from None
            if alert.data.status == "resolved":
                continue
            alerts.append(ScoredAlert.of(alert))
    return alerts


@dataclass(slots=True)
class TypeScore:
    """The score of one alert type."""

    type: str
    labels: int = 0
    alerts: int = 0
    true_positives: int = 0
    detected: int = 0
    ttd_seconds: list[float] = field(default_factory=list)
    false_positives: list[ScoredAlert] = field(default_factory=list)
    missed: list[Label] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        """Matching alerts / alerts (None without alerts)."""
        return self.true_positives / self.alerts if self.alerts else None

    @property
    def recall(self) -> float | None:
        """Detected labels / labels (None without labels)."""
        return self.detected / self.labels if self.labels else None

    @property
    def median_ttd(self) -> float | None:
        """Median seconds from a label's start to its first matching alert."""
        return statistics.median(self.ttd_seconds) if self.ttd_seconds else None

    def as_dict(self, show_fp: int | None = None) -> dict[str, Any]:
        """JSON-able form."""
        fps = self.false_positives if show_fp is None else self.false_positives[:show_fp]
        return {
            "type": self.type,
            "labels": self.labels,
            "alerts": self.alerts,
            "true_positive_alerts": self.true_positives,
            "detected_labels": self.detected,
            "precision": self.precision,
            "recall": self.recall,
            "median_ttd_seconds": self.median_ttd,
            "ttd_seconds": self.ttd_seconds,
            "false_positives": [_alert_dict(a) for a in fps],
            "false_positive_count": len(self.false_positives),
            "missed": [label.model_dump(mode="json") for label in self.missed],
        }


def _rfc3339(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _alert_dict(alert: ScoredAlert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "type": alert.type,
        "subject": f"{alert.tenant}/{alert.key_id}",
        "time": _rfc3339(alert.time),
        "summary": alert.summary,
    }


def evaluate(
    alerts: Iterable[ScoredAlert], labels: Iterable[Label], tolerance_s: float = DEFAULT_TOLERANCE_S
) -> dict[str, TypeScore]:
    """Score `alerts` against `labels`, per type (every scored type appears, even with no data)."""
    scores = {t: TypeScore(t) for t in SCORED_TYPES}
    by_key: dict[tuple[str, str, str], list[Label]] = {}
    first_match: dict[str, datetime] = {}
    label_list = list(labels)
    for label in label_list:
        scores.setdefault(label.type, TypeScore(label.type)).labels += 1
        by_key.setdefault((label.type, label.tenant, label.key_id), []).append(label)
    tolerance = tolerance_s
    for alert in sorted(alerts, key=lambda a: (a.time, a.id)):
        score = scores.setdefault(alert.type, TypeScore(alert.type))
        score.alerts += 1
        matched = False
        for label in by_key.get((alert.type, alert.tenant, alert.key_id), ()):
            if (label.start - alert.time).total_seconds() <= tolerance and (
                alert.time - label.end
            ).total_seconds() <= tolerance:
                matched = True
                if label.id not in first_match:
                    first_match[label.id] = alert.time
        if matched:
            score.true_positives += 1
        else:
            score.false_positives.append(alert)
    for label in label_list:
        score = scores[label.type]
        if label.id in first_match:
            score.detected += 1
            score.ttd_seconds.append((first_match[label.id] - label.start).total_seconds())
        else:
            score.missed.append(label)
    return scores


@dataclass(frozen=True, slots=True)
class NoisyDay:
    """One key's alerts of one type on one UTC day, more than `NOISY_PER_DAY` and not explained by a label."""

    type: str
    tenant: str
    key_id: str
    day: date
    alerts: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        subject = f"{self.tenant}/{self.key_id}"
        return {"type": self.type, "subject": subject, "day": self.day.isoformat(), "alerts": self.alerts}


def noisy_days(
    alerts: Iterable[ScoredAlert],
    labels: Iterable[Label],
    limit: int = NOISY_PER_DAY,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> list[NoisyDay]:
    """The (key, type, UTC day) groups with more than `limit` alerts where no label of that type and key overlaps
    the day (widened by the tolerance); sorted by day, then alerts (most first)."""
    counts: dict[tuple[str, str, str, date], int] = defaultdict(int)
    for alert in alerts:
        counts[(alert.type, alert.tenant, alert.key_id, alert.time.astimezone(UTC).date())] += 1
    spans: dict[tuple[str, str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    slack = timedelta(seconds=tolerance_s)
    for label in labels:
        spans[(label.type, label.tenant, label.key_id)].append((label.start - slack, label.end + slack))
    out = []
    for (kind, tenant, key_id, day), n in counts.items():
        if n <= limit:
            continue
        begin = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = begin + timedelta(days=1)
        if any(start < end and stop >= begin for start, stop in spans.get((kind, tenant, key_id), ())):
            continue
        out.append(NoisyDay(kind, tenant, key_id, day, n))
    return sorted(out, key=lambda d: (d.day, -d.alerts, d.type, d.tenant, d.key_id))


def render_noisy(noisy: list[NoisyDay], show: int = 10) -> str:
    """The noisy-days line of the report, with up to `show` groups."""
    head = (
        f"keys with more than {NOISY_PER_DAY} alerts of one type in a UTC day, not explained by a label: {len(noisy)}"
    )
    rows = [f"  {d.day.isoformat()}  {d.type}  {d.tenant}/{d.key_id}  {d.alerts} alerts" for d in noisy[:show]]
    return "\n".join([head, *rows])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def render_table(scores: dict[str, TypeScore], show_fp: int = 10) -> str:
    """A plain-text report: the score table, then false positives and missed labels."""
    header = ("type", "labels", "alerts", "TP alerts", "precision", "recall", "median TTD")
    rows = [header]
    for score in scores.values():
        rows.append(
            (
                score.type,
                str(score.labels),
                str(score.alerts),
                str(score.true_positives),
                _pct(score.precision),
                _pct(score.recall),
                _seconds(score.median_ttd),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    fps = [a for s in scores.values() for a in s.false_positives]
    if fps:
        lines += ["", f"false positives ({len(fps)}, showing {min(show_fp, len(fps))}):"]
        for alert in sorted(fps, key=lambda a: a.time)[:show_fp]:
            d = _alert_dict(alert)
            lines.append(f"  {d['time']}  {alert.type}  {d['subject']}  {alert.summary}")
    missed = [label for s in scores.values() for label in s.missed]
    if missed:
        lines += ["", f"missed labels ({len(missed)}):"]
        for label in sorted(missed, key=lambda x: x.start):
            start = _rfc3339(label.start)
            lines.append(f"  {label.id}  {label.type}  {label.subject}  from {start}: {label.description}")
    return "\n".join(lines)


def check_thresholds(scores: dict[str, TypeScore], min_precision: float | None, min_recall: float | None) -> list[str]:
    """One message per type that misses a floor (types with nothing to measure pass)."""
    failures = []
    for score in scores.values():
        if min_precision is not None and score.precision is not None and score.precision < min_precision:
            failures.append(f"{score.type}: precision {score.precision:.3f} < {min_precision}")
        if min_recall is not None and score.recall is not None and score.recall < min_recall:
            failures.append(f"{score.type}: recall {score.recall:.3f} < {min_recall}")
    return failures
