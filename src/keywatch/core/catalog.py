"""The detectors keywatch runs: one list of specs that config loading, wiring, the codec, the docs and
dashboard checks and the simulator's type lists iterate. A new detector is its module plus one `register`."""

from __future__ import annotations

from typing import Any

from keywatch.core import (
    browser,
    environment,
    error_burst,
    ip_baseline,
    key_management,
    lifecycle_burst,
    portal,
    privilege,
    rate_baseline,
    registry,
    revocation_impact,
    revoked_use,
    rotation,
    rotation_age,
    sharing,
    unused,
)
from keywatch.core.spec import DetectorSpec

# In the order they run on each event: the key registry first (every detector reads it).
_SPECS: list[DetectorSpec[Any, Any]] = [
    registry.SPEC,
    revoked_use.SPEC,
    ip_baseline.SPEC,
    rate_baseline.SPEC,
    error_burst.SPEC,
    browser.SPEC,
    key_management.SPEC,
    privilege.SPEC,
    portal.SPEC,
    lifecycle_burst.SPEC,
    rotation_age.SPEC,
    unused.SPEC,
    rotation.SPEC,
    revocation_impact.SPEC,
    environment.SPEC,
    sharing.SPEC,
]


_changes = [0]  # bumped on every change, so caches of what the specs imply (the codec's decoders) can tell


def version() -> int:
    """A number that changes whenever the registered detectors change."""
    return _changes[0]


def specs() -> tuple[DetectorSpec[Any, Any], ...]:
    """Every registered detector, in the order they run."""
    return tuple(_SPECS)


def register(spec: DetectorSpec[Any, Any]) -> DetectorSpec[Any, Any]:
    """Add a detector (it runs after the ones registered before it)."""
    if any(known.name == spec.name for known in _SPECS):
        raise ValueError(f"a detector called {spec.name!r} is already registered")
    taken = alert_types()
    for alert in spec.alerts:
        if alert.type in taken:
            raise ValueError(f"alert type {alert.type!r} is already emitted by another detector")
    _SPECS.append(spec)
    _changes[0] += 1
    return spec


def unregister(name: str) -> None:
    """Remove the detector called `name`."""
    _SPECS[:] = [spec for spec in _SPECS if spec.name != name]
    _changes[0] += 1


def alert_types() -> tuple[str, ...]:
    """Every alert type the registered detectors emit."""
    return tuple(alert.type for spec in _SPECS for alert in spec.alerts)


def spec_of_type(alert_type: str) -> DetectorSpec[Any, Any]:
    """The detector that emits `alert_type`."""
    for spec in _SPECS:
        if any(alert.type == alert_type for alert in spec.alerts):
            return spec
    raise KeyError(alert_type)
