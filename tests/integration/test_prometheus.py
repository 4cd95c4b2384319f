"""The real Prometheus (Debian package) scraping a real worker fed on the real broker: every board query has data."""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_helpers import ROOT, WorkerProcess, produce
from tests.unit.test_dashboards import ALERT_TYPES, dashboard_queries

# The input below makes an alert of every type of the detectors it exercises (lifecycle, new IP, spike, 4xx,
# revoked key); the key-hygiene types need weeks of event time or situations of their own (their alerts through
# the real broker: tests/integration/test_hygiene_kafka.py), so the hygiene row's alert panels are only queried.
HYGIENE_ALERT_PANELS = {"Rotation and idleness alerts", "Key misuse alerts", "Key management governance alerts"}
PRODUCED = {
    t
    for t in ALERT_TYPES
    if t.split(".", 1)[-1] in {"created", "scopeChanged", "revoked", "usedFromNewIp", "requestSpike", "4xxCluster"}
    or t == "apiKey.usedAfterRevoke"
}

PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
# What Grafana would put for $__rate_interval: wide enough to hold the second wave of traffic below.
RATE_INTERVAL = "1m"

# Detectors tuned to fire on a few minutes of traffic (the defaults need hours to days of history).
DETECTION_TOML = """
[detection.ip]
learning_seconds = 0
learning_requests = 3
[detection.rate]
min_per_minute = 10
min_ratio = 2.0
min_score = 2.0
min_history_minutes = 5
resolve_minutes = 2
late_minutes = 0
[detection.errors]
min_errors = 5
min_ratio = 0.5
baseline_min_minutes = 0
resolve_minutes = 2
[detection.revoked]
grace_seconds = 0
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key(tenant: str, key_id: str) -> bytes:
    return f"{tenant}/{key_id}".encode()


def lifecycle_events(prefix: str, now: datetime) -> list[tuple[bytes | None, bytes | None]]:
    """Keys created (one re-scoped, one revoked) half an hour ago: created, scopeChanged and revoked alerts."""
    t0 = now.replace(second=0, microsecond=0) - timedelta(minutes=30)
    events = []
    for name in ("ip", "spike", "err", "rev"):
        events.append(
            {
                "type": "apiKey.created",
                "ts": _ts(t0),
                "tenant": "acme",
                "key_id": f"{prefix}-{name}",
                "name": f"{name} key",
                "env": "live",
                "role": "writer",
                "actor": "alice@acme.example",
                "ip": "198.51.100.7",
            }
        )
    events.append({**events[0], "type": "apiKey.scopeChanged", "ts": _ts(t0 + timedelta(seconds=30)), "role": "admin"})
    events.append({**events[3], "type": "apiKey.revoked", "ts": _ts(t0 + timedelta(minutes=1))})
    return [(_key("acme", e["key_id"]), orjson.dumps(e)) for e in events]


def requests_and_rejects(prefix: str, now: datetime) -> list[tuple[bytes | None, bytes | None]]:
    """Requests that make a new-IP alert, a spike, a 4xx cluster and a revoked-key use; plus invalid records."""
    t0 = now.replace(second=0, microsecond=0) - timedelta(minutes=30)
    records: list[dict[str, Any]] = []

    def req(key: str, when: datetime, *, ip: str = "192.0.2.10", status: int = 200) -> None:
        records.append(
            {
                "ts": _ts(when),
                "tenant": "acme",
                "key_id": f"{prefix}-{key}",
                "env": "live",
                "ip": ip,
                "method": "GET",
                "path": "/v1/customers/42",
                "status": status,
                "request_id": f"{prefix}-{len(records)}",
            }
        )

    for minute in range(1, 8):  # learning, then a request from a range never seen
        req("ip", t0 + timedelta(minutes=minute))
    req("ip", t0 + timedelta(minutes=9), ip="203.0.113.77")
    for minute in range(1, 9):  # a quiet baseline, a burst, then quiet until the episode resolves
        for second in (5, 35):
            req("spike", t0 + timedelta(minutes=minute, seconds=second))
    for i in range(60):
        req("spike", t0 + timedelta(minutes=9, seconds=i))
    for minute in range(10, 16):
        req("spike", t0 + timedelta(minutes=minute, seconds=5))
    for minute in range(1, 4):
        req("err", t0 + timedelta(minutes=minute))
    for i in range(12):
        req("err", t0 + timedelta(minutes=5, seconds=2 * i), status=401)
    for minute in range(8, 12):
        req("err", t0 + timedelta(minutes=minute))
    req("rev", t0 + timedelta(minutes=5), status=401)
    # Keyed like a gateway would: one key's requests stay in order on one partition.
    good: list[tuple[bytes | None, bytes | None]] = [(_key(r["tenant"], r["key_id"]), orjson.dumps(r)) for r in records]
    bad: list[tuple[bytes | None, bytes | None]] = [
        (None, orjson.dumps({**records[0], "ip": "300.1.1.1"})),
        (None, b"{not json"),
        (None, orjson.dumps({**records[0], "env": "staging"})),
    ]
    return good + bad


class Prometheus:
    """A real Prometheus process on a loopback port with deploy/prometheus/prometheus.yml adapted for a test."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "Prometheus is missing: install the Debian package prometheus (scripts/setup-env does)"
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
        config["rule_files"] = [str(RULES)]
        config.pop("alerting", None)
        (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "keywatch"]
        job["static_configs"] = [{"targets": [target]}]
        config["scrape_configs"] = [job]
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, deadline_s: float = 30.0) -> None:
        """Wait for /-/ready with a deadline."""
        end = time.monotonic() + deadline_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < end:
                assert self.proc.poll() is None, f"Prometheus exited:\n{self.log.read_text()[-3000:]}"
                try:
                    async with session.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"Prometheus not ready in {deadline_s}s:\n{self.log.read_text()[-3000:]}")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API; the result vector."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/api/v1/query", data={"query": expr}) as response,
        ):
            body = await response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        """Terminate Prometheus, killing it if it does not exit."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    """Start Prometheus scraping a target; every one started is stopped at the end of the test."""
    started: list[Prometheus] = []

    def make(target: str) -> Prometheus:
        prom = Prometheus(tmp_path, target)
        started.append(prom)
        return prom

    yield make
    for prom in started:
        prom.stop()


async def scrape_worker(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The worker's own /metrics, as {(sample name, labels): value}."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def wait_for(what: str, check: Callable[[], Any], deadline_s: float, describe: Callable[[], str]) -> None:
    """Await `check()` until it is truthy or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not within {deadline_s}s\n{describe()}")


def has_number(result: list[dict[str, Any]]) -> bool:
    """Whether an instant-query result has at least one sample that is a number (not NaN)."""
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


async def test_every_dashboard_query_returns_data(
    worker_factory: Callable[..., WorkerProcess],
    kafka_bootstrap: str,
    prometheus_factory: Callable[[str], Prometheus],
    tmp_path: Path,
) -> None:
    """With Prometheus scraping a worker fed valid and invalid records, every panel query of both boards has data."""
    metrics_port = free_port()
    config = tmp_path / "keywatch.toml"
    config.write_text(DETECTION_TOML)
    worker = worker_factory(
        extra_env={
            "KEYWATCH_METRICS_PORT": str(metrics_port),
            "KEYWATCH_CONFIG": str(config),
            "KEYWATCH_METRICS_TENANT_LABELS": "10",  # so the top-tenants panel has data too
        }
    )
    prom = prometheus_factory(f"127.0.0.1:{metrics_port}")
    await prom.wait_ready()
    worker.start()
    await worker.wait_ready()

    async def feed(prefix: str) -> None:
        # Lifecycle first, and processed, so the revocation is known before the request that uses the key.
        now = datetime.now(UTC)
        before = await scrape_worker(metrics_port)
        lifecycle = lifecycle_events(prefix, now)
        await produce(kafka_bootstrap, worker.topics["lifecycle"], lifecycle)
        key = ("keywatch_records_total", (("outcome", "accepted"), ("topic", worker.topics["lifecycle"])))

        async def lifecycle_done() -> bool:
            return (await scrape_worker(metrics_port)).get(key, 0) - before.get(key, 0) >= len(lifecycle)

        await wait_for("lifecycle events consumed", lifecycle_done, 60, worker.log_text)
        await asyncio.sleep(1)  # the keyed hop to the detect agent
        await produce(kafka_bootstrap, worker.topics["requests"], requests_and_rejects(prefix, now))

    await feed("w1")

    async def every_type_scraped() -> bool:
        result = await prom.query("sum by (type) (keywatch_alerts_total)")
        return {r["metric"]["type"] for r in result} >= PRODUCED

    await wait_for("an alert of every type in Prometheus", every_type_scraped, 90, worker.log_text)
    # Counters that appear already incremented have no rate yet: a second wave makes every rate positive.
    await feed("w2")
    # what Grafana sends for job = keywatch and instance = All (the variables' allValue)
    queries = [
        (uid, title, expr.replace('"$job"', '"keywatch"').replace('"$instance"', '".+"'))
        for uid, title, expr in dashboard_queries(RATE_INTERVAL, "10m")
    ]
    missing: dict[str, str] = {}

    async def every_query_has_data() -> bool:
        missing.clear()
        for uid, title, expr in queries:
            if title in HYGIENE_ALERT_PANELS:
                await prom.query(expr)  # Prometheus takes it; its series exist once such an alert fired
                continue
            if not has_number(await prom.query(expr)):
                missing[f"{uid} / {title}"] = expr
        return not missing

    await wait_for(
        "data for every dashboard query",
        every_query_has_data,
        90,
        lambda: "\n".join(f"{k}: {v}" for k, v in missing.items()),
    )
    assert len(queries) >= 25
    # deploy/prometheus/rules.yml loaded, and every rule evaluates without error on the real series.
    expected = {
        rule.get("alert") or rule["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]
    }
    health: dict[str, str] = {}

    async def rules_evaluated() -> bool:
        async with aiohttp.ClientSession() as session, session.get(f"{prom.url}/api/v1/rules") as response:
            groups = (await response.json())["data"]["groups"]
        health.clear()
        health.update({rule["name"]: rule["health"] for group in groups for rule in group["rules"]})
        return set(health) == expected and all(h == "ok" for h in health.values())

    await wait_for("every rule evaluated", rules_evaluated, 60, lambda: str(health))

    async def recorded() -> bool:
        return bool(await prom.query("keywatch:records:rate5m"))

    # The recording group evaluates every 30 s (its own interval): its first run may predate the data.
    await wait_for("a recording rule with data", recorded, 75, lambda: "keywatch:records:rate5m is empty")
