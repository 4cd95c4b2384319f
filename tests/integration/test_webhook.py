"""The webhook sink against a real HTTP receiver on 127.0.0.1: retries honouring Retry-After, each alert id once,
signatures a receiver can verify, drops counted; and the real worker posting its alerts there."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cloudevents.v1.http import from_http
from prometheus_client import CollectorRegistry

from keywatch.metrics import Metrics
from keywatch.sinks.webhook import WebhookSink, verify
from tests.factories import as_bytes, lifecycle_dict
from tests.integration.kafka_helpers import WorkerProcess, free_port, produce, wait_until
from tests.integration.test_alertmanager import make_alert
from tests.unit.test_webhook import SECRET


@dataclass
class Hook:
    """What the receiver saw: the answers it gave and the alert ids of the requests it accepted."""

    url: str = ""
    fail_first: int = 0
    answered: list[int] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    verified: list[bool] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    _last: list[float] = field(default_factory=list)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    got = Hook()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        if got._last:
            got.waits.append(now - got._last[0])
        got._last[:] = [now]
        if len(got.answered) < got.fail_first:
            got.answered.append(503)
            return web.Response(status=503, headers={"Retry-After": "1"})
        got.answered.append(200)
        got.verified.append(verify(SECRET, request.headers, body))
        got.content_types.append(request.headers["Content-Type"])
        got.bodies.append(body)
        got.accepted.append(from_http(dict(request.headers), body)["id"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    got.url = str(server.make_url("/hook"))
    try:
        yield got
    finally:
        await server.close()


async def test_each_alert_arrives_once_signed_after_retries(hook: Hook) -> None:
    hook.fail_first = 2
    metrics = Metrics(CollectorRegistry())
    alerts = [make_alert(key_id=f"key_live_{i}", part=f"198.51.100.{i}/32") for i in range(4)]
    sink = WebhookSink(hook.url, SECRET, metrics=metrics, backoff_initial_s=0.01, backoff_max_s=5.0, interval_s=0.05)
    await sink.start()
    try:
        await sink.write(alerts)
        await sink.write(alerts[::-1])  # the same ids again: deduped
        await sink.flush(timeout_s=30)
        await sink.write(alerts[:2])  # already delivered: never posted twice
        await sink.flush(timeout_s=30)
    finally:
        await sink.stop()
    assert hook.answered[:3] == [503, 503, 200]
    assert all(wait >= 0.9 for wait in hook.waits[:2])  # Retry-After: 1 honoured, not the 10 ms backoff
    assert sorted(hook.accepted) == sorted(a.id for a in alerts)
    assert all(hook.verified)
    assert set(hook.content_types) == {"application/cloudevents+json; charset=UTF-8"}
    assert metrics.registry.get_sample_value("keywatch_webhook_posted_total") == 4


async def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    metrics = Metrics(CollectorRegistry())
    sink = WebhookSink(
        f"http://127.0.0.1:{free_port()}/down", SECRET, metrics=metrics, max_queue=2, interval_s=3600, max_attempts=1
    )
    alerts = [make_alert(key_id=f"key_live_{i}", part=f"198.51.100.{i}/32") for i in range(5)]
    await sink.write(alerts)  # not started: nothing is sent, the queue keeps the newest 2
    assert sink.dropped == 3
    assert metrics.registry.get_sample_value("keywatch_webhook_dropped_total", {"reason": "overflow"}) == 3


async def test_the_worker_posts_its_alerts_to_the_webhook(
    hook: Hook, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(
        extra_env={"KEYWATCH_WEBHOOK_URL": hook.url, "KEYWATCH_WEBHOOK_SECRET": SECRET.decode()},
    )
    worker.start()
    await worker.wait_ready()
    events = [
        lifecycle_dict(key_id="k_hook", ts="2026-01-05T09:00:00Z"),
        lifecycle_dict(type="apiKey.revoked", key_id="k_hook", ts="2026-01-05T10:00:00Z"),
    ]
    await produce(worker.bootstrap, worker.topics["lifecycle"], [(None, as_bytes(e)) for e in events])
    await wait_until(lambda: len(hook.accepted) >= 2, deadline_s=60, what="both lifecycle alerts at the webhook")
    assert len(hook.accepted) == 2, worker.log_text()[-3000:]
    assert all(hook.verified)
    assert {orjson.loads(b)["type"] for b in hook.bodies} == {"apiKey.created", "apiKey.revoked"}
