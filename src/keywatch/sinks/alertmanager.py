"""Optional sink: keywatch's alerts posted to Alertmanager's v2 API (`POST /api/v2/alerts`).

Off unless a URL is configured. The Kafka alert topic stays the system of record; Alertmanager is a
convenience for routing, grouping and silencing. So this sink never holds up the pipeline: `send` only
queues (bounded), and a timer in the worker calls `flush`, which posts in batches with retries.

Alertmanager identifies an alert by its label set. Every alert gets an `alert_id` label: the alert's
CloudEvent id, or for episode alerts (spikes, 4xx clusters) the `episode_id`, so the resolving alert of an
episode (posted with `endsAt`) resolves the firing one. Ids already posted are remembered in a bounded LRU:
the same alert id is never posted twice, even when keywatch re-emits it after a restart of the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from pydantic import ValidationError

from keywatch.contract.alerts import Alert
from keywatch.sinks.base import Channel, Sink

log = logging.getLogger(__name__)

API_PATH = "/api/v2/alerts"
# Alertmanager keeps label and annotation values as strings; evidence beyond this is cut (the topic has it all).
MAX_EVIDENCE_CHARS = 4096


class AlertmanagerError(Exception):
    """Alertmanager stayed unreachable (or answered 5xx) through every retry."""


class AlertmanagerRefused(AlertmanagerError):
    """Alertmanager answered 4xx: the alerts are invalid and retrying would not help."""


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_postable(alert: Alert, *, generator_url: str | None = None) -> dict[str, Any]:
    """The Alertmanager v2 `postableAlert` for one keywatch alert."""
    data = alert.data
    evidence = orjson.dumps(data.evidence, option=orjson.OPT_SORT_KEYS).decode()
    if len(evidence) > MAX_EVIDENCE_CHARS:
        evidence = evidence[: MAX_EVIDENCE_CHARS - 1] + "…"
    postable: dict[str, Any] = {
        "labels": {
            "alertname": alert.type,
            "severity": data.severity,
            "tenant": data.tenant,
            "key_id": data.key_id,
            "env": data.env,
            "alert_id": data.episode_id or alert.id,
        },
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


class AlertmanagerSink:
    """Posts alerts to Alertmanager: a bounded queue, batches, retries with backoff, no duplicate ids.

    Use `post` to send now (and wait), or `send` + `flush` for batch mode. Implements the pipeline's `Sink`
    protocol for the `alerts` channel (other channels are ignored), so it can sit beside the Kafka sink.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 64,
        max_queue: int = 10_000,
        dedupe_size: int = 65_536,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 15.0,
        timeout_s: float = 10.0,
        generator_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if batch_size < 1 or max_queue < 1 or dedupe_size < 1 or max_attempts < 1:
            raise ValueError("batch_size, max_queue, dedupe_size and max_attempts must be at least 1")
        self.endpoint = url.rstrip("/") + API_PATH
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.generator_url = generator_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = session
        self._own_session = session is None
        self._queue: deque[Alert] = deque(maxlen=max_queue)
        self._queued_ids: set[str] = set()
        self._posted: OrderedDict[str, None] = OrderedDict()
        self._dedupe_size = dedupe_size
        self._lock = asyncio.Lock()
        self.posted = 0  # alerts accepted by Alertmanager
        self.duplicates = 0  # alerts skipped because their id was already posted or queued
        self.dropped = 0  # alerts lost: queue overflow or refused by Alertmanager

    # -- the Sink protocol ----------------------------------------------------------------------------
    async def send(self, channel: Channel, key: bytes | None, value: bytes) -> None:
        """Queue the alert carried by an `alerts` message; other channels are not Alertmanager's business."""
        if channel != "alerts":
            return
        try:
            alert = Alert.model_validate_json(value)
        except ValidationError:
            log.exception("not an alert, not posted to Alertmanager (key %r)", key)
            return
        self.enqueue(alert)

    # -- batch mode -----------------------------------------------------------------------------------
    def enqueue(self, alert: Alert) -> bool:
        """Queue one alert for the next `flush`; False when its id was already posted or is queued."""
        if self.seen(alert.id) or alert.id in self._queued_ids:
            self.duplicates += 1
            return False
        if len(self._queue) == self._queue.maxlen:
            lost = self._queue.popleft()
            self._queued_ids.discard(lost.id)
            self.dropped += 1
            log.warning("Alertmanager queue full: dropped alert %s (it is still on the alert topic)", lost.id)
        self._queue.append(alert)
        self._queued_ids.add(alert.id)
        return True

    @property
    def pending(self) -> int:
        """Alerts queued and not posted yet."""
        return len(self._queue)

    async def flush(self) -> int:
        """Post every queued alert in batches; return how many were posted.

        A batch Alertmanager cannot take after every retry goes back to the head of the queue for the next
        flush; a batch it refuses (4xx: the alerts are invalid) is dropped and logged.
        """
        total = 0
        async with self._lock:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                try:
                    total += await self._post_batch(batch)
                except AlertmanagerRefused as exc:
                    self.dropped += len(batch)
                    for alert in batch:
                        self._queued_ids.discard(alert.id)
                    log.error("Alertmanager refused %d alert(s), dropped: %s", len(batch), exc)
                    continue
                except AlertmanagerError as exc:
                    self._queue.extendleft(reversed(batch))
                    log.warning("Alertmanager unreachable, %d alert(s) kept for the next flush: %s", self.pending, exc)
                    break
                for alert in batch:
                    self._queued_ids.discard(alert.id)
        return total

    async def run(self, interval_s: float = 1.0) -> None:
        """Flush every `interval_s` until cancelled (for callers without a timer of their own)."""
        while True:
            await asyncio.sleep(interval_s)
            await self.flush()

    # -- direct mode ----------------------------------------------------------------------------------
    async def post(self, alerts: Iterable[Alert]) -> int:
        """Post these alerts now (skipping ids already posted), in batches; return how many were posted.

        Raises AlertmanagerRefused when Alertmanager refuses a batch, AlertmanagerError when it stays unreachable.
        """
        fresh: dict[str, Alert] = {}
        for alert in alerts:
            if self.seen(alert.id) or alert.id in fresh:
                self.duplicates += 1
            else:
                fresh[alert.id] = alert
        pending = list(fresh.values())
        total = 0
        async with self._lock:
            for start in range(0, len(pending), self.batch_size):
                total += await self._post_batch(pending[start : start + self.batch_size])
        return total

    def seen(self, alert_id: str) -> bool:
        """Whether this alert id was already posted (within the LRU's memory)."""
        if alert_id in self._posted:
            self._posted.move_to_end(alert_id)
            return True
        return False

    async def _post_batch(self, batch: Sequence[Alert]) -> int:
        body = orjson.dumps([to_postable(alert, generator_url=self.generator_url) for alert in batch])
        await self._post_with_retries(body)
        for alert in batch:
            self._remember(alert.id)
        self.posted += len(batch)
        return len(batch)

    async def _post_with_retries(self, body: bytes) -> None:
        session = self._client()
        delay = self.backoff_initial_s
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with session.post(
                    self.endpoint, data=body, headers={"Content-Type": "application/json"}, timeout=self._timeout
                ) as response:
                    if response.status < 300:
                        return
                    text = (await response.text())[:500]
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        raise AlertmanagerRefused(f"refused with {response.status}: {text}")
                    last = f"HTTP {response.status}: {text}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.max_attempts:
                log.info("Alertmanager post failed (%s), retry %d in %.2fs", last, attempt, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not security
                delay = min(delay * 2, self.backoff_max_s)
        raise AlertmanagerError(f"gave up after {self.max_attempts} attempts: {last}")

    def _remember(self, alert_id: str) -> None:
        self._posted[alert_id] = None
        self._posted.move_to_end(alert_id)
        while len(self._posted) > self._dedupe_size:
            self._posted.popitem(last=False)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def close(self) -> None:
        """Close the HTTP session if this sink opened it (queued alerts are not flushed: call flush first)."""
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> AlertmanagerSink:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class TeeSink:
    """Sends every message to the primary sink (Kafka) and copies alerts to Alertmanager's queue."""

    def __init__(self, primary: Sink, alertmanager: AlertmanagerSink) -> None:
        self.primary = primary
        self.alertmanager = alertmanager

    async def send(self, channel: Channel, key: bytes | None, value: bytes) -> None:
        """Send through the primary sink, then queue alerts for Alertmanager (never blocks on it)."""
        await self.primary.send(channel, key, value)
        if channel == "alerts":
            await self.alertmanager.send(channel, key, value)
