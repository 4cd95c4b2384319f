"""Optional sink: keywatch's alerts posted to Alertmanager's v2 API (`POST /api/v2/alerts`).

Off unless a URL is configured. The Kafka alert topic stays the system of record; Alertmanager is a
convenience for routing, grouping and silencing. So this sink is optional (an `HttpSink`, `sinks/queueing.py`):
`write` only queues, and the queue's worker posts in batches, with retries.

Alertmanager identifies an alert by its label set. Every alert gets an `alert_id` label: the alert's
CloudEvent id, or for episode alerts (spikes, 4xx clusters) the `episode_id`, so the resolving alert of an
episode (posted with `endsAt`) resolves the firing one. Ids already posted are remembered (bounded): the same
alert id is never posted twice, even when keywatch re-emits it after a restart of the pipeline. A tenant alert
(no key) has no `key_id` and `env` labels: Alertmanager treats an empty label as an absent one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Unpack

import orjson

from keywatch.contract.alerts import Alert
from keywatch.contract.events import format_time
from keywatch.metrics import Metrics
from keywatch.sinks.queueing import HttpOptions, HttpRequest, HttpSink

API_PATH = "/api/v2/alerts"
# Alertmanager keeps label and annotation values as strings; evidence beyond this is cut (the topic has it all).
MAX_EVIDENCE_CHARS = 4096


def to_postable(alert: Alert, *, generator_url: str | None = None) -> dict[str, Any]:
    """The Alertmanager v2 `postableAlert` for one keywatch alert."""
    data = alert.data
    evidence = orjson.dumps(data.evidence, option=orjson.OPT_SORT_KEYS).decode()
    if len(evidence) > MAX_EVIDENCE_CHARS:
        evidence = evidence[: MAX_EVIDENCE_CHARS - 1] + "…"
    labels = {
        "alertname": alert.type,
        "severity": data.severity,
        "tenant": data.tenant,
        "key_id": data.key_id,
        "env": data.env,
        "alert_id": data.episode_id or alert.id,
    }
    postable: dict[str, Any] = {
        # A tenant alert has no key: its key_id and env are left out, never sent as "None".
        "labels": {name: value for name, value in labels.items() if value is not None},
        "annotations": {
            "summary": data.summary,
            "runbook": data.runbook,
            "evidence": evidence,
            "event_id": alert.id,
            "subject": alert.subject,
            "source": alert.source,
        },
        "startsAt": format_time(alert.time),
    }
    if data.status == "resolved":
        # The firing alert of the episode has the same labels: Alertmanager merges the two and keeps the
        # earlier startsAt, so the episode is shown from its start to its end.
        postable["endsAt"] = format_time(alert.time)
    if generator_url:
        postable["generatorURL"] = generator_url
    return postable


class AlertmanagerSink(HttpSink[Alert]):
    """Posts alerts to Alertmanager: an `HttpSink` (bounded queue deduped by alert id, batches, retries) whose
    request is a batch of `to_postable` alerts; given `metrics`, it counts keywatch_alertmanager_posted_total and
    keywatch_alertmanager_dropped_total."""

    def __init__(
        self,
        url: str,
        *,
        generator_url: str | None = None,
        metrics: Metrics | None = None,
        **options: Unpack[HttpOptions],
    ) -> None:
        """`options`: the tuning of `HttpSink` (batch_size, max_queue, interval_s, max_attempts, ...)."""
        self.endpoint = url.rstrip("/") + API_PATH
        self.generator_url = generator_url
        self._metrics = metrics
        super().__init__(
            self._request,
            item_id=lambda alert: alert.id,
            name="Alertmanager",
            on_drop=self._on_drop,
            on_delivered=self._on_delivered,
            **options,
        )

    @property
    def posted(self) -> int:
        """Alerts Alertmanager accepted."""
        return self.delivered

    def _request(self, batch: Sequence[Alert]) -> HttpRequest:
        body = orjson.dumps([to_postable(alert, generator_url=self.generator_url) for alert in batch])
        return HttpRequest(self.endpoint, body)

    def _on_drop(self, n: int, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.alertmanager_dropped.inc(n)

    def _on_delivered(self, n: int) -> None:
        if self._metrics is not None:
            self._metrics.alertmanager_posted.inc(n)
