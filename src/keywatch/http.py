"""The worker's HTTP endpoints: /metrics (Prometheus), /healthz (alive), /readyz (connected, assigned, recovered)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keywatch.metrics import Metrics

log = logging.getLogger(__name__)

Readiness = Callable[[], dict[str, bool]]


def build_http_app(metrics: Metrics, readiness: Readiness) -> web.Application:
    """An aiohttp application serving the three endpoints."""

    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = readiness()
        ready = all(checks.values())
        metrics.ready.set(1 if ready else 0)
        return web.Response(
            body=orjson.dumps({"ready": ready, "checks": checks}),
            status=200 if ready else 503,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(metrics: Metrics, readiness: Readiness, host: str, port: int) -> web.AppRunner:
    """Start serving; the caller keeps the runner and calls `cleanup()` to stop."""
    runner = web.AppRunner(build_http_app(metrics, readiness), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("metrics and health endpoints on http://%s:%d/{metrics,healthz,readyz}", host, port)
    return runner
