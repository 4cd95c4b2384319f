"""The detection engine: one entry point per input kind, state in and (state, alerts, forwards) out.

The engine is pure and event-time driven: the worker feeds it from Kafka with state from a faust table,
`keywatch replay` feeds it from files with state in a dict. Both get the same alerts with the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from keywatch.contract.alerts import Alert
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core import registry
from keywatch.core.state import KeyState


@dataclass(frozen=True, slots=True)
class Forward:
    """A message for another key's state (which may live on another partition), e.g. a rotation hand-off."""

    tenant: str
    key_id: str
    kind: str
    payload: dict[str, Any]
    ts_ms: int

    @property
    def subject(self) -> str:
        """Where it goes: `<tenant>/<key_id>`."""
        return f"{self.tenant}/{self.key_id}"


@dataclass(slots=True)
class Outcome:
    """What processing one event produced."""

    state: KeyState
    alerts: list[Alert] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)


class RequestDetector(Protocol):
    """A detector that looks at every request of a key."""

    name: str

    def on_request(self, state: KeyState, record: RequestRecord, ts_ms: int) -> list[Alert]:
        """Update this detector's part of `state` and return the alerts the request calls for."""
        ...


@runtime_checkable
class ForwardAware(Protocol):
    """A detector that also takes part in hand-offs between keys (e.g. the IP baseline on rotation)."""

    name: str

    def on_forward(self, state: KeyState, kind: str, payload: dict[str, Any], ts_ms: int) -> list[Forward]:
        """Apply a message addressed to this key; return messages for other keys."""
        ...


class EnvSwitch:
    """One detector per environment under one name: live and sandbox keys can have different thresholds.

    A key's environment is the `env` of its requests; for hand-offs it is the registry's (live if unknown).
    """

    def __init__(self, name: str, by_env: dict[str, RequestDetector]) -> None:
        self.name = name
        self.by_env = by_env

    def on_request(self, state: KeyState, record: RequestRecord, ts_ms: int) -> list[Alert]:
        """Run the detector configured for the request's environment."""
        return self.by_env[record.env].on_request(state, record, ts_ms)

    def on_forward(self, state: KeyState, kind: str, payload: dict[str, Any], ts_ms: int) -> list[Forward]:
        """Hand the message to the detector configured for the key's environment."""
        detector = self.by_env.get(state.registry.env or "live") or self.by_env["live"]
        if isinstance(detector, ForwardAware):
            return detector.on_forward(state, kind, payload, ts_ms)
        return []


def ts_ms(value: Any) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(value.timestamp() * 1000)


class Engine:
    """Routes events to the registry and the detectors."""

    def __init__(self, *, source: str, detectors: list[RequestDetector] | None = None) -> None:
        self.source = source
        self.detectors = detectors or []
        self._forward_aware = [d for d in self.detectors if isinstance(d, ForwardAware)]

    @staticmethod
    def new_state(tenant: str, key_id: str) -> KeyState:
        """State for a key never seen before."""
        return KeyState(tenant=tenant, key_id=key_id)

    def on_lifecycle(self, state: KeyState | None, event: LifecycleEvent) -> Outcome:
        """Apply a lifecycle event: update the registry, emit the lifecycle alert, hand off on rotation."""
        state = state or self.new_state(event.tenant, event.key_id)
        alerts, forwards = registry.apply_lifecycle(state, event, source=self.source)
        return Outcome(state, alerts, [Forward(**f) for f in forwards])

    def on_request(self, state: KeyState | None, record: RequestRecord) -> Outcome:
        """Apply one request: registry bookkeeping, then every detector."""
        state = state or self.new_state(record.tenant, record.key_id)
        when = ts_ms(record.ts)
        registry.touch(state, record, when)
        alerts: list[Alert] = []
        for detector in self.detectors:
            alerts.extend(detector.on_request(state, record, when))
        return Outcome(state, alerts)

    def on_forward(self, state: KeyState | None, forward: Forward) -> Outcome:
        """Apply a message addressed to this key by another key's processing."""
        state = state or self.new_state(forward.tenant, forward.key_id)
        more = [Forward(**f) for f in registry.apply_forward(state, forward.kind, forward.payload, forward.ts_ms)]
        for detector in self._forward_aware:
            more.extend(detector.on_forward(state, forward.kind, forward.payload, forward.ts_ms))
        return Outcome(state, [], more)
