"""Wiring: the engine with every registered detector, configured per environment."""

from __future__ import annotations

from typing import Any

from keywatch.contract.alerts import RUNBOOK_BASE
from keywatch.core.config import DetectionConfig
from keywatch.core.engine import DetectorSet, Engine
from keywatch.core.spec import BuildContext, Detector, DetectorSpec
from keywatch.geo import GeoLookup


def build_detectors(config: DetectionConfig, context: BuildContext) -> DetectorSet:
    """The detectors for one environment's settings, in the order they run."""
    pairs: list[tuple[DetectorSpec[Any, Any], Detector[Any]]] = [
        (spec, spec.build(config.settings(spec), context)) for spec in config.specs
    ]
    return DetectorSet(pairs, config.max_suppressions)


def build_engine(
    config: DetectionConfig, source: str, geo: GeoLookup | None = None, runbook_base: str = RUNBOOK_BASE
) -> Engine:
    """An engine running every detector of `config`, with the live or sandbox settings chosen per key, and
    detectors of their own for the tenants with overrides or trusted lists (built once, here)."""
    lateness_ms = int(config.allowed_lateness_seconds * 1000)
    context = BuildContext(
        source=source,
        geo=geo,
        trusted=config.trusted.for_tenant(None),
        roles=config.role_table(),
        allowed_lateness_ms=lateness_ms,
    )
    live = config.for_env("live")
    sandbox = config.for_env("sandbox")
    by_env = {"live": build_detectors(live, context)}
    same = config.live.is_empty() and config.sandbox.is_empty()
    by_env["sandbox"] = by_env["live"] if same else build_detectors(sandbox, context)
    by_tenant: dict[str, dict[str, DetectorSet]] = {}
    for tenant in sorted({*config.tenant, *config.trusted.tenant}):
        own = BuildContext(
            source=source,
            geo=geo,
            trusted=config.trusted.for_tenant(tenant),
            roles=config.role_table(),
            allowed_lateness_ms=lateness_ms,
        )
        by_tenant[tenant] = {env: build_detectors(config.for_tenant(tenant, env), own) for env in ("live", "sandbox")}
    return Engine(
        source=source,
        specs=config.specs,
        by_env=by_env,
        by_tenant=by_tenant,
        allowed_lateness_ms=lateness_ms,
        runbook_base=runbook_base,
    )
