"""Optional sink: keywatch's alerts posted to Alertmanager's v2 API (`POST /api/v2/alerts`).

Off unless a URL is configured. The Kafka alert topic stays the system of record; Alertmanager is a
convenience for routing, grouping and silencing. So this sink is optional (`required = False`): `write` only
queues, and the queue's worker posts in batches, with retries (`sinks/queueing.py`).

Alertmanager identifies an alert by its label set. Every alert gets an `alert_id` label: the alert's
CloudEvent id, or for episode alerts (spikes, 4xx clusters) the `episode_id`, so the resolving alert of an
episode (posted with `endsAt`) resolves the firing one. Ids already posted are remembered (bounded): the same
alert id is never posted twice, even when keywatch re-emits it after a restart of the pipeline. A tenant alert
(no key) has no `key_id` and `env` labels: Alertmanager treats an empty label as an absent one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from keywatch.contract.alerts import Alert
from keywatch.metrics import Metrics
from keywatch.sinks.base import OutputSink
from keywatch.sinks.queueing import DeliveryQueue, HttpPoster, HttpRequest, Retrying

API_PATH = "/api/v2/alerts"
# Alertmanager keeps label and annotation values as strings; evidence beyond this is cut (the topic has it all).
MAX_EVIDENCE_CHARS = 4096


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        "startsAt": _rfc3339(alert.time),
    }
    if data.status == "resolved":
        # The firing alert of the episode has the same labels: Alertmanager merges the two and keeps the
        # earlier startsAt, so the episode is shown from its start to its end.
        postable["endsAt"] = _rfc3339(alert.time)
    if generator_url:
        postable["generatorURL"] = generator_url
    return postable


class AlertmanagerSink(OutputSink[Alert]):
    """Posts alerts to Alertmanager: a `DeliveryQueue` (bounded, deduped by alert id) whose batches an
    `HttpPoster` sends with retries. `posted`, `duplicates` and `dropped` count what happened (and, given
    `metrics`, keywatch_alertmanager_posted and keywatch_alertmanager_dropped)."""

    name = "alertmanager"
    required = False

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 64,
        max_queue: int = 10_000,
        dedupe_size: int = 65_536,
        interval_s: float = 1.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 15.0,
        timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        generator_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + API_PATH
        self.generator_url = generator_url
        self.stop_timeout_s = stop_timeout_s
        self._poster = HttpPoster(
            Retrying(max_attempts, backoff_initial_s, backoff_max_s), timeout_s=timeout_s, session=session
        )
        self._metrics = metrics
        self.queue: DeliveryQueue[Alert] = DeliveryQueue(
            self._post_batch,
            item_id=lambda alert: alert.id,
            name="Alertmanager",
            batch_size=batch_size,
            max_queue=max_queue,
            dedupe_size=dedupe_size,
            interval_s=interval_s,
            retry_initial_s=backoff_initial_s,
            retry_max_s=backoff_max_s,
            on_drop=self._on_drop,
            on_delivered=self._on_delivered,
        )

    @property
    def posted(self) -> int:
        """Alerts Alertmanager accepted."""
        return self.queue.delivered

    @property
    def duplicates(self) -> int:
        """Alerts not queued: their id was already posted or queued."""
        return self.queue.duplicates

    @property
    def dropped(self) -> int:
        """Alerts lost: queue overflow or refused by Alertmanager."""
        return self.queue.dropped

    @property
    def pending(self) -> int:
        """Alerts queued (or being posted) and not accepted yet."""
        return self.queue.pending

    async def start(self) -> None:
        """Start the queue's worker."""
        await self.queue.start()

    async def write(self, items: Sequence[Alert]) -> None:
        """Queue the alerts (never waits on Alertmanager)."""
        for alert in items:
            self.queue.put(alert)

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued alert is posted (or dropped), at most `timeout_s`."""
        await self.queue.flush(timeout_s)

    async def stop(self) -> None:
        """Post what is queued (for at most `stop_timeout_s`), stop the worker, close the HTTP session."""
        try:
            await self.queue.stop(self.stop_timeout_s)
        finally:
            await self._poster.close()

    async def _post_batch(self, batch: Sequence[Alert]) -> None:
        body = orjson.dumps([to_postable(alert, generator_url=self.generator_url) for alert in batch])
        await self._poster.post(HttpRequest(self.endpoint, body))

    def _on_drop(self, n: int, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.alertmanager_dropped.inc(n)

    def _on_delivered(self, n: int) -> None:
        if self._metrics is not None:
            self._metrics.alertmanager_posted.inc(n)
