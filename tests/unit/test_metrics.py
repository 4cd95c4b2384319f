"""Metrics recorded by the pipeline, and the HTTP endpoints, on a fresh registry per test."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from keywatch.core.engine import Engine
from keywatch.http import build_http_app
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.sinks.base import MemorySink
from tests.factories import as_bytes, lifecycle_dict, request_dict


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_pipeline_counts_records_dead_letters_and_alerts(metrics: Metrics) -> None:
    """Accepted and rejected records, dead letters by reason and alerts by type are counted."""
    sink = MemorySink()
    processor = Processor(Engine(source="/t"), sink, Topics("req", "life"), metrics=metrics)
    await processor.ingest("req", 0, 0, None, as_bytes(request_dict()))
    await processor.ingest("req", 0, 1, None, as_bytes(request_dict(ip="300.1.1.1")))
    await processor.ingest("life", 0, 0, None, as_bytes(lifecycle_dict()))
    for key, value in list(sink.messages["keyed"]):
        assert key is not None
        await processor.detect(key, value, {})
    assert _value(metrics, "keywatch_records_total", topic="req", outcome="accepted") == 1
    assert _value(metrics, "keywatch_records_total", topic="req", outcome="rejected") == 1
    assert _value(metrics, "keywatch_dead_letters_total", reason="ip") == 1
    assert _value(metrics, "keywatch_alerts_total", type="apiKey.created", severity="low", status="firing") == 1
    assert _value(metrics, "keywatch_detection_delay_seconds_count", type="apiKey.created") == 1
    assert (
        _value(metrics, "keywatch_last_event_timestamp_seconds", topic="req")
        == datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()
    )


def test_last_event_time_never_moves_back(metrics: Metrics) -> None:
    """A late event does not rewind the newest-event gauge."""
    metrics.observe_event_time("t", datetime(2026, 1, 5, 12, tzinfo=UTC))
    metrics.observe_event_time("t", datetime(2026, 1, 5, 11, tzinfo=UTC))
    assert (
        _value(metrics, "keywatch_last_event_timestamp_seconds", topic="t")
        == datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()
    )


async def test_endpoints(metrics: Metrics) -> None:
    """/metrics serves the exposition, /healthz is always ok, /readyz is 503 until every check passes."""
    checks = {"assigned": False, "recovered": True}
    async with TestClient(TestServer(build_http_app(metrics, lambda: dict(checks)))) as client:
        body = await (await client.get("/metrics")).text()
        assert "keywatch_build_info" in body
        assert (await client.get("/healthz")).status == 200
        not_ready = await client.get("/readyz")
        assert not_ready.status == 503
        assert (await not_ready.json())["checks"]["assigned"] is False
        checks["assigned"] = True
        assert (await client.get("/readyz")).status == 200
    assert _value(metrics, "keywatch_ready") == 1


def test_tenant_labels_are_off_by_default(metrics: Metrics) -> None:
    """Without the option no series carries a tenant."""
    metrics.observe_alert("apiKey.created", "low", "firing", datetime(2026, 1, 5, tzinfo=UTC), tenant="acme")
    assert _value(metrics, "keywatch_tenant_alerts_total", tenant="acme", type="apiKey.created") is None


def test_tenant_labels_are_capped() -> None:
    """With a cap of 2, the first two tenants get their own series and every other tenant is counted as _other."""
    metrics = Metrics(CollectorRegistry(), tenant_labels=2)
    when = datetime(2026, 1, 5, tzinfo=UTC)
    for tenant in ["acme", "globex", "initech", "hooli", "acme"]:
        metrics.observe_alert("apiKey.usedFromNewIp", "medium", "firing", when, tenant=tenant)
    assert _value(metrics, "keywatch_tenant_alerts_total", tenant="acme", type="apiKey.usedFromNewIp") == 2
    assert _value(metrics, "keywatch_tenant_alerts_total", tenant="globex", type="apiKey.usedFromNewIp") == 1
    assert _value(metrics, "keywatch_tenant_alerts_total", tenant="_other", type="apiKey.usedFromNewIp") == 2
    assert _value(metrics, "keywatch_tenant_alerts_total", tenant="initech", type="apiKey.usedFromNewIp") is None


def test_every_metric_is_documented_with_its_type() -> None:
    """docs/observability.md lists every keywatch_* metric with the type Prometheus sees (a total that only goes
    up is a counter with `_total`, never a gauge)."""
    import re
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    doc = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    documented = dict(re.findall(r"^\| `(keywatch_[a-z_]+)` \| (\w+) \|", doc, flags=re.M))
    families = {f.name: f.type for f in Metrics(CollectorRegistry()).registry.collect()}
    for name, kind in families.items():
        if not name.startswith("keywatch_"):
            continue
        shown = f"{name}_total" if kind == "counter" else f"{name}_info" if kind == "info" else name
        if kind == "info":
            shown, kind = name + "_info", "gauge"
        assert shown in documented, f"{shown} is not in the metrics table of docs/observability.md"
        assert documented[shown] == kind, f"{shown}: documented as {documented[shown]}, is a {kind}"
