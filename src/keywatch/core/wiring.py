"""Wiring: the engine with every registered detector, configured per environment."""

from __future__ import annotations

from typing import Any

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


def build_engine(config: DetectionConfig, source: str, geo: GeoLookup | None = None) -> Engine:
    """An engine running every detector of `config`, with the live or sandbox settings chosen per key."""
    context = BuildContext(source=source, geo=geo)
    live = config.for_env("live")
    sandbox = config.for_env("sandbox")
    by_env = {"live": build_detectors(live, context)}
    same = config.live.is_empty() and config.sandbox.is_empty()
    by_env["sandbox"] = by_env["live"] if same else build_detectors(sandbox, context)
    return Engine(
        source=source,
        specs=config.specs,
        by_env=by_env,
        allowed_lateness_ms=int(config.allowed_lateness_seconds * 1000),
    )
