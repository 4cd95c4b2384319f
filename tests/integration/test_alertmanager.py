"""The Alertmanager sink against the real Alertmanager (Debian prometheus-alertmanager) on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from keywatch.contract.alerts import Alert
from keywatch.metrics import Metrics
from keywatch.sinks.alertmanager import AlertmanagerSink, to_postable
from keywatch.sinks.base import MemoryAlertSink, SinkSet
from tests.integration.kafka_helpers import ROOT
from tests.integration.kafka_helpers import free_port as loopback_port

CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningAlertmanager:
    """A real Alertmanager process and its base URL."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[RunningAlertmanager]:
    """The real Alertmanager with deploy/alertmanager/alertmanager.yml on a free loopback port, stopped at the end."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "Alertmanager is missing: install the Debian package prometheus-alertmanager (scripts/setup-env)"
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={CONFIG}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip port: a single local instance
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"Alertmanager exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Alertmanager not ready in 30s:\n{log.read_text()}"
            time.sleep(0.1)
        yield RunningAlertmanager(url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def make_alert(
    *,
    type: str = "apiKey.usedFromNewIp",
    key_id: str | None = "key_live_1",
    severity: str = "high",
    status: str = "firing",
    episode_id: str | None = None,
    when: datetime | None = None,
    part: str = "203.0.113.0/24",
) -> Alert:
    """A keywatch alert with overridable fields."""
    return Alert.build(
        type=type,
        id_parts=(status, part),
        source="/keywatch/test",
        time=when or datetime.now(UTC) - timedelta(seconds=30),
        tenant="acme",
        key_id=key_id,
        env=None if key_id is None else "live",
        severity=severity,  # type: ignore[arg-type]
        summary=f"Key {key_id or 'of acme'} was used from {part}.",
        evidence={"observed": {"range": part}, "baseline": {"ranges": ["192.0.2.0/24"]}},
        status=status,  # type: ignore[arg-type]
        episode_id=episode_id,
    )


async def active_alerts(url: str) -> list[dict[str, Any]]:
    """GET /api/v2/alerts: the alerts Alertmanager holds as active."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/v2/alerts") as response:
        assert response.status == 200
        alerts: list[dict[str, Any]] = await response.json()
        return alerts


def counting_session(counter: list[str]) -> aiohttp.ClientSession:
    """A client session that records every request it sends."""
    trace = aiohttp.TraceConfig()

    async def on_start(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        counter.append(f"{params.method} {params.url.path}")

    trace.on_request_start.append(on_start)
    return aiohttp.ClientSession(trace_configs=[trace])


async def post(sink: AlertmanagerSink, alerts: list[Alert]) -> None:
    """Write the alerts and wait until Alertmanager has them (or they are dropped)."""
    await sink.write(alerts)
    await sink.flush(timeout_s=30)


async def test_posted_alert_carries_labels_and_annotations(alertmanager: RunningAlertmanager) -> None:
    """An alert posted through the sink is active in Alertmanager with keywatch's labels and annotations."""
    alert = make_alert()
    sink = AlertmanagerSink(alertmanager.url, generator_url="https://keywatch.example/alerts")
    await sink.start()
    try:
        await post(sink, [alert])
    finally:
        await sink.stop()
    assert sink.posted == 1
    (got,) = await active_alerts(alertmanager.url)
    assert got["labels"] == {
        "alertname": "apiKey.usedFromNewIp",
        "severity": "high",
        "tenant": "acme",
        "key_id": "key_live_1",
        "env": "live",
        "alert_id": alert.id,
    }
    annotations = got["annotations"]
    assert annotations["summary"] == alert.data.summary
    assert annotations["runbook"] == alert.data.runbook
    assert orjson.loads(annotations["evidence"]) == alert.data.evidence
    assert annotations["event_id"] == alert.id
    assert got["generatorURL"] == "https://keywatch.example/alerts"
    starts = datetime.fromisoformat(got["startsAt"].replace("Z", "+00:00"))
    assert abs((starts - alert.time).total_seconds()) < 0.001
    assert got["status"]["state"] == "active"
    assert got["receivers"][0]["name"] == "security-page"  # routed by the example config


async def test_a_tenant_alert_is_taken_without_key_labels(alertmanager: RunningAlertmanager) -> None:
    """Alertmanager accepts a tenant alert (no key): active, with no key_id or env label."""
    alert = make_alert(key_id=None)
    assert alert.is_tenant_alert
    sink = AlertmanagerSink(alertmanager.url)
    try:
        await post(sink, [alert])
    finally:
        await sink.stop()
    assert (sink.posted, sink.dropped) == (1, 0)
    (got,) = await active_alerts(alertmanager.url)
    assert got["labels"] == {
        "alertname": "apiKey.usedFromNewIp",
        "severity": "high",
        "tenant": "acme",
        "alert_id": alert.id,
    }
    assert got["annotations"]["subject"] == "acme"


async def test_same_alert_id_is_posted_once(alertmanager: RunningAlertmanager) -> None:
    """Writing the same alert id again (in one batch, or after it was posted) sends no second request for it."""
    requests: list[str] = []
    alert, other = make_alert(), make_alert(key_id="key_live_2", severity="medium")
    async with counting_session(requests) as session:
        sink = AlertmanagerSink(alertmanager.url, session=session)
        await post(sink, [alert, alert])
        await post(sink, [alert])
        await post(sink, [alert, other, other])
        await sink.stop()
    assert requests == ["POST /api/v2/alerts", "POST /api/v2/alerts"]
    assert (sink.posted, sink.duplicates) == (2, 4)
    ids = sorted(a["labels"]["alert_id"] for a in await active_alerts(alertmanager.url))
    assert ids == sorted([alert.id, other.id])


async def test_resolved_episode_ends_the_firing_alert(alertmanager: RunningAlertmanager) -> None:
    """The resolved alert of an episode is posted with endsAt and resolves the firing one in Alertmanager."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    episode = "0d3f7f0e-6a1c-5d2e-9b8a-1f2e3d4c5b6a"
    firing = make_alert(type="apiKey.requestSpike", severity="medium", episode_id=episode, when=start)
    resolved = make_alert(
        type="apiKey.requestSpike",
        severity="medium",
        status="resolved",
        episode_id=episode,
        when=start + timedelta(minutes=6),
    )
    assert "endsAt" not in to_postable(firing)
    assert to_postable(resolved)["endsAt"] == resolved.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sink = AlertmanagerSink(alertmanager.url)
    try:
        await post(sink, [firing])
        (got,) = await active_alerts(alertmanager.url)
        assert got["labels"]["alert_id"] == episode
        assert got["annotations"]["event_id"] == firing.id
        await post(sink, [resolved])
    finally:
        await sink.stop()
    assert await active_alerts(alertmanager.url) == []


async def test_a_sink_set_posts_in_batches_beside_the_alert_topic(alertmanager: RunningAlertmanager) -> None:
    """In a SinkSet beside the required (topic) sink, the Alertmanager sink's worker posts the alerts in batches
    on its own, and the app's stop posts what is left."""
    requests: list[str] = []
    alerts = [make_alert(key_id=f"key_live_{i}", part=f"198.51.100.{i}/32") for i in range(5)]
    topic: list[tuple[bytes | None, bytes]] = []
    async with counting_session(requests) as session:
        sink = AlertmanagerSink(alertmanager.url, batch_size=2, interval_s=3600, session=session)
        sinks = SinkSet([MemoryAlertSink(topic), sink])
        await sinks.start()
        for alert in alerts:
            await sinks.write([alert])
        await sinks.stop()  # the interval never passed: stop posts the last (partial) batch
    assert len(topic) == 5
    assert len(requests) == 3
    assert len(await active_alerts(alertmanager.url)) == 5


async def test_unreachable_alertmanager_keeps_the_queue() -> None:
    """With nothing listening, posts are retried and the alerts stay queued; the pipeline's write never waits."""
    sink = AlertmanagerSink(f"http://127.0.0.1:{free_port()}", max_attempts=3, backoff_initial_s=0.01)
    await sink.start()
    try:
        await sink.write([make_alert()])
        assert await sink.queue.flush(timeout_s=0.5) is False
        assert (sink.pending, sink.posted, sink.dropped) == (1, 0, 0)
    finally:
        sink.stop_timeout_s = 0.01
        await sink.stop()


@pytest.fixture
async def flaky_server() -> AsyncIterator[tuple[str, list[int]]]:
    """An HTTP server answering 503 twice, then 400 for alerts named `bad` and 200 otherwise."""
    answered: list[int] = []

    async def alerts(request: web.Request) -> web.Response:
        body = await request.json()
        status = 503 if len(answered) < 2 else 400 if body[0]["labels"]["alertname"] == "bad" else 200
        answered.append(status)
        return web.Response(status=status, text="nope" if status >= 400 else "")

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), answered
    finally:
        await server.close()


async def test_retries_5xx_and_gives_up_on_4xx(flaky_server: tuple[str, list[int]]) -> None:
    """5xx answers are retried with backoff; a 4xx answer is not retried and the batch is dropped (and counted)."""
    url, answered = flaky_server
    metrics = Metrics()
    sink = AlertmanagerSink(url, backoff_initial_s=0.01, metrics=metrics)
    try:
        await post(sink, [make_alert()])
        assert answered == [503, 503, 200]
        await post(sink, [make_alert(type="bad")])
        assert answered[-1] == 400
        assert answered.count(400) == 1
    finally:
        await sink.stop()
    assert (sink.pending, sink.posted, sink.dropped) == (0, 1, 1)
    assert metrics.registry.get_sample_value("keywatch_alertmanager_posted_total") == 1
    assert metrics.registry.get_sample_value("keywatch_alertmanager_dropped_total") == 1


@dataclass
class Receiver:
    """What a plain HTTP receiver got: the alert ids of each request it answered 200, and its answers."""

    url: str
    accepted: list[str]
    answered: list[int]
    waits: list[float]


@pytest.fixture
async def retry_after_server() -> AsyncIterator[Receiver]:
    """A real HTTP server on 127.0.0.1 answering 503 with `Retry-After: 1` to the first two posts, then 200."""
    got = Receiver("", [], [], [])
    last: list[float] = []

    async def alerts(request: web.Request) -> web.Response:
        body = await request.json()
        now = time.monotonic()
        if last:
            got.waits.append(now - last[0])
        last[:] = [now]
        if len(got.answered) < 2:
            got.answered.append(503)
            return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
        got.answered.append(200)
        got.accepted.extend(alert["labels"]["alert_id"] for alert in body)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/api/v2/alerts", alerts)
    server = TestServer(app, host="127.0.0.1", port=loopback_port())
    await server.start_server()
    got.url = str(server.make_url("")).rstrip("/")
    try:
        yield got
    finally:
        await server.close()


async def test_retry_after_is_honoured_and_each_alert_arrives_once(retry_after_server: Receiver) -> None:
    """A receiver that answers 503 with Retry-After, then 200: the sink waits as asked (not its 10 ms backoff),
    and every alert id, written twice, arrives exactly once."""
    got = retry_after_server
    alerts = [make_alert(key_id=f"key_live_{i}", part=f"198.51.100.{i}/32") for i in range(6)]
    sink = AlertmanagerSink(got.url, batch_size=4, backoff_initial_s=0.01, backoff_max_s=5.0, interval_s=0.05)
    await sink.start()
    try:
        await sink.write(alerts)
        await sink.write(alerts[::-1])
        await sink.flush(timeout_s=30)
        await sink.write(alerts)  # already posted: not posted again
        await sink.flush(timeout_s=30)
    finally:
        await sink.stop()
    assert got.answered[:3] == [503, 503, 200]
    assert all(wait >= 0.9 for wait in got.waits[:2])  # Retry-After: 1, not the 10 ms backoff
    assert sorted(got.accepted) == sorted(alert.id for alert in alerts)
    assert (sink.posted, sink.dropped) == (6, 0)
