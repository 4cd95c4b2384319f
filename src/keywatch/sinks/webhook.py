"""The webhook sink: each alert POSTed to one URL as a CloudEvent, signed, retried, never twice.

The request is the CloudEvents HTTP binding's structured content mode: the body is the alert's CloudEvent JSON
(the same bytes as on the alert topic), `Content-Type: application/cloudevents+json; charset=UTF-8`. Two
headers let a receiver check that keywatch sent it and reject replays:

    X-Keywatch-Timestamp: 1767610800            (Unix seconds when the request was built)
    X-Keywatch-Signature: sha256=<hex>           HMAC-SHA256 under KEYWATCH_WEBHOOK_SECRET of
                                                  b"<timestamp>." + body

A receiver recomputes the HMAC over the timestamp header, a dot and the raw body, compares it in constant time
(`verify`), and refuses a timestamp too far from its clock (5 minutes is the usual tolerance). It is an
`HttpSink`: a bounded queue (overflow drops the oldest, counted), deduped by alert id, retried with backoff
honouring `Retry-After`; 2xx is delivered, 408/429/5xx are retried, other 4xx refuse the alert (dropped,
counted).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Unpack

from keywatch.contract.alerts import Alert
from keywatch.metrics import Metrics
from keywatch.sinks.queueing import HttpOptions, HttpRequest, HttpSink

CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
SIGNATURE_HEADER = "X-Keywatch-Signature"
TIMESTAMP_HEADER = "X-Keywatch-Timestamp"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver does: the signature matches the body and timestamp, and the timestamp is recent."""
    stamp = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not stamp or not given or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, stamp, body), given)


def alert_body(alert: Alert) -> bytes:
    """The request body: the alert's CloudEvent JSON."""
    return alert.model_dump_json().encode()


class WebhookSink(HttpSink[Alert]):
    """POSTs each alert to `url`, signed under `secret`; counts keywatch_webhook_posted_total and
    keywatch_webhook_dropped_total{reason} when given `metrics`."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        **options: Unpack[HttpOptions],
    ) -> None:
        """`options`: the tuning of `HttpSink` (max_queue, interval_s, max_attempts, ...); one alert per request."""
        if not secret:
            raise ValueError("a webhook needs a secret to sign with")
        self.url = url
        self._secret = secret
        self._metrics = metrics
        self._clock = clock
        one_each: HttpOptions = {**options, "batch_size": 1}  # one CloudEvent per request (structured mode)
        super().__init__(
            self._request,
            item_id=lambda alert: alert.id,
            name="webhook",
            on_drop=self._on_drop,
            on_delivered=self._on_delivered,
            **one_each,
        )

    def _request(self, batch: Sequence[Alert]) -> HttpRequest:
        (alert,) = batch
        body = alert_body(alert)
        stamp = str(int(self._clock()))
        headers = {
            "Content-Type": CONTENT_TYPE,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature(self._secret, stamp, body),
        }
        return HttpRequest(self.url, body, headers)

    def _on_drop(self, n: int, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_dropped.labels(reason).inc(n)

    def _on_delivered(self, n: int) -> None:
        if self._metrics is not None:
            self._metrics.webhook_posted.inc(n)
