"""The worker's HTTP endpoints: /metrics (Prometheus), /healthz (alive; 503 when the watchdog trips), /readyz
(connected, assigned, recovered, input topics present, partitions progressing)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keywatch.metrics import Metrics

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, bool]]
Details = Callable[[], dict[str, Any]]


def build_http_app(
    metrics: Metrics, readiness: Readiness, details: Details | None = None, liveness: Details | None = None
) -> web.Application:
    """An aiohttp application serving the three endpoints.

    `details()` adds fields to /readyz's JSON (which topics are missing, which partitions stalled); `liveness()`
    returns what makes the process not alive (empty when it is): /healthz is 503 with it, else 200.
    """

    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        problems = liveness() if liveness is not None else {}
        if problems:
            return web.Response(
                body=orjson.dumps({"status": "stalled", **problems}), status=503, content_type="application/json"
            )
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = readiness()
        ready = all(checks.values())
        metrics.ready.set(1 if ready else 0)
        return web.Response(
            body=orjson.dumps({"ready": ready, "checks": checks, **(details() if details is not None else {})}),
            status=200 if ready else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(
    metrics: Metrics,
    readiness: Readiness,
    host: str,
    port: int,
    details: Details | None = None,
    liveness: Details | None = None,
) -> web.AppRunner:
    """Start serving; the caller keeps the runner and calls `cleanup()` to stop."""
    runner = web.AppRunner(build_http_app(metrics, readiness, details, liveness), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics and health endpoints on http://%s:%d/{metrics,healthz,readyz}", host, port)
    return runner
