"""Wiring: the engine with every detector, configured per environment."""

from __future__ import annotations

from keywatch.core.config import DetectionConfig
from keywatch.core.engine import Engine, EnvSwitch, RequestDetector
from keywatch.core.error_burst import ErrorBurst
from keywatch.core.ip_baseline import IpBaseline
from keywatch.core.rate_baseline import RateBaseline
from keywatch.core.revoked_use import RevokedUse
from keywatch.geo import GeoLookup


def build_detectors(config: DetectionConfig, *, source: str, geo: GeoLookup | None = None) -> list[RequestDetector]:
    """The detectors for one environment's settings, in the order they run."""
    return [
        RevokedUse(config.revoked, source=source, max_suppressions=config.max_suppressions),
        IpBaseline(config.ip, source=source, geo=geo, max_suppressions=config.max_suppressions),
        RateBaseline(config.rate, source=source),
        ErrorBurst(config.errors, source=source),
    ]


def build_engine(config: DetectionConfig, source: str, geo: GeoLookup | None = None) -> Engine:
    """An engine running every detector, with the live or sandbox settings chosen per request."""
    live = build_detectors(config.for_env("live"), source=source, geo=geo)
    if config.live.is_empty() and config.sandbox.is_empty():
        return Engine(source=source, detectors=live)
    sandbox = build_detectors(config.for_env("sandbox"), source=source, geo=geo)
    detectors: list[RequestDetector] = [
        EnvSwitch(one.name, {"live": one, "sandbox": other}) for one, other in zip(live, sandbox, strict=True)
    ]
    return Engine(source=source, detectors=detectors)
