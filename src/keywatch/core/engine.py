"""The detection engine: one entry point per input kind, state in and (state, alerts, forwards) out.

The engine is pure and event-time driven: the worker feeds it from Kafka with state from a faust table,
`keywatch replay` feeds it from files with state in a dict. Both get the same alerts with the same ids.

Detectors (`keywatch.core.spec`) return findings; the engine owns what is common to all of them:
- the alert: its deterministic id (uuid5 of type, subject and the finding's id parts), the CloudEvents envelope,
  the detector's default severity and the runbook link of the type;
- suppression per (alert type, discriminator), expired by event time (`keywatch.core.suppression`);
- episodes: an "open" finding fires with an `episode_id`, the matching "close" resolves with the same one;
- ticks: a detector's event-time timer runs before any record of the key at or after its time, or once the
  watermark (newest event time seen minus `allowed_lateness_seconds`) passes it (`on_tick`); its alert time and
  id derive from the tick's time, never from when it happened to run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keywatch.contract.alerts import RUNBOOK_BASE, Alert, alert_id
from keywatch.contract.events import Env, LifecycleEvent, RequestRecord
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import TENANT_KEY_ID, KeyState
from keywatch.core.suppression import DEFAULT_MAX_ENTRIES, is_suppressed, suppress, suppression_key


@dataclass(frozen=True, slots=True)
class Forward:
    """A message for another key's (or the tenant's) state, which may live on another partition, e.g. a
    rotation hand-off. `key_id` empty (`TENANT_KEY_ID`): the tenant's state."""

    tenant: str
    key_id: str
    kind: str
    payload: dict[str, Any]
    ts_ms: int

    @property
    def subject(self) -> str:
        """Where it goes: `<tenant>/<key_id>` (`<tenant>/` for the tenant)."""
        return f"{self.tenant}/{self.key_id}"

    @classmethod
    def to_tenant(cls, tenant: str, kind: str, payload: dict[str, Any], ts_ms: int) -> Forward:
        """A message for the tenant's own state."""
        return cls(tenant, TENANT_KEY_ID, kind, payload, ts_ms)


@dataclass(slots=True)
class Outcome:
    """What processing one event produced."""

    state: KeyState
    alerts: list[Alert] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)


def ts_ms(value: Any) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(value.timestamp() * 1000)


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def _overrides(detector: Detector[Any], hook: str) -> bool:
    return getattr(type(detector), hook) is not getattr(Detector, hook)


class DetectorSet:
    """The configured detectors of one environment, with the hooks each one implements."""

    def __init__(
        self, detectors: Iterable[tuple[DetectorSpec[Any, Any], Detector[Any]]], max_suppressions: int
    ) -> None:
        pairs = list(detectors)
        self.max_suppressions = max_suppressions
        self.by_name: dict[str, Detector[Any]] = {}
        for spec, detector in pairs:
            detector.name = spec.name
            self.by_name[spec.name] = detector
        keyed = [d for s, d in pairs if s.scope in ("key", "both")]
        tenant = [d for s, d in pairs if s.scope in ("tenant", "both")]
        self.request = [d for d in keyed if _overrides(d, "on_request")]
        self.lifecycle = [d for d in keyed if _overrides(d, "on_lifecycle")]
        self.key_forward = [d for d in keyed if _overrides(d, "on_forward")]
        self.tenant_forward = [d for d in tenant if _overrides(d, "on_forward")]


class Engine:
    """Routes events to the detectors and turns their findings into alerts."""

    def __init__(
        self,
        *,
        source: str,
        specs: Iterable[DetectorSpec[Any, Any]] = (),
        by_env: dict[str, DetectorSet] | None = None,
        by_tenant: dict[str, dict[str, DetectorSet]] | None = None,
        allowed_lateness_ms: int = 300_000,
        runbook_base: str = RUNBOOK_BASE,
    ) -> None:
        if by_env is None:  # the key registry alone (imported here: its module imports this one)
            from keywatch.core import registry

            spec = registry.SPEC
            alone = DetectorSet([(spec, spec.build(spec.config(), BuildContext(source)))], DEFAULT_MAX_ENTRIES)
            specs, by_env = (spec,), {"live": alone, "sandbox": alone}
        self.source = source
        self.runbook_base = runbook_base
        self.specs = tuple(specs)
        self.by_env = by_env
        # Tenants with settings of their own (overrides, trusted lists): their detectors per environment.
        self.by_tenant = by_tenant or {}
        self.allowed_lateness_ms = allowed_lateness_ms
        self._types: dict[str, AlertSpec] = {a.type: a for spec in self.specs for a in spec.alerts}

    @staticmethod
    def new_state(tenant: str, key_id: str) -> KeyState:
        """State for a key (or, `key_id` empty, a tenant) never seen before."""
        return KeyState(tenant=tenant, key_id=key_id)

    def detectors(self, tenant: str, env: str | None) -> DetectorSet:
        """The detectors for keys of `tenant` in `env` (one dict lookup more only when some tenant has its own)."""
        sets = (self.by_tenant.get(tenant) or self.by_env) if self.by_tenant else self.by_env
        return sets.get(env or "live") or sets["live"]

    def _set_of(self, state: KeyState) -> DetectorSet:
        return self.detectors(state.tenant, state.registry.env)

    # -- entry points ----------------------------------------------------------------------------------------

    def on_lifecycle(self, state: KeyState | None, event: LifecycleEvent) -> Outcome:
        """Apply a lifecycle event: due ticks, then every detector's `on_lifecycle` (the key registry first)."""
        state = state or self.new_state(event.tenant, event.key_id)
        outcome = Outcome(state)
        when = ts_ms(event.ts)
        if state.ticks:
            self._run_ticks(state, when, outcome)
        detectors = self.detectors(event.tenant, event.env)
        for detector in detectors.lifecycle:
            effects = detector.on_lifecycle(state, event, when)
            if effects:
                self._apply(state, detector.name, effects, event.ts, when, event.env, detectors, outcome)
        return outcome

    def on_request(self, state: KeyState | None, record: RequestRecord) -> Outcome:
        """Apply one request: due ticks, the key registry's bookkeeping, then every detector."""
        state = state or self.new_state(record.tenant, record.key_id)
        outcome = Outcome(state)
        when = ts_ms(record.ts)
        if state.ticks:
            self._run_ticks(state, when, outcome)
        _touch(state, record, when)
        detectors = self.detectors(record.tenant, record.env)
        for detector in detectors.request:
            effects = detector.on_request(state, record, when)
            if effects:
                self._apply(state, detector.name, effects, record.ts, when, record.env, detectors, outcome)
        return outcome

    def run_request(self, state: KeyState, record: RequestRecord, when: int) -> list[Alert]:
        """Only the detectors' `on_request` hooks, at an explicit event time `when` (tests drive one detector
        minute by minute with one record object)."""
        outcome = Outcome(state)
        detectors = self.detectors(record.tenant, record.env)
        for detector in detectors.request:
            effects = detector.on_request(state, record, when)
            if effects:
                self._apply(state, detector.name, effects, record.ts, when, record.env, detectors, outcome)
        return outcome.alerts

    def on_forward(self, state: KeyState | None, forward: Forward) -> Outcome:
        """Apply a message addressed to this key (or tenant) by another key's processing."""
        state = state or self.new_state(forward.tenant, forward.key_id)
        outcome = Outcome(state)
        if state.ticks:
            self._run_ticks(state, forward.ts_ms, outcome)
        if state.is_tenant:
            # A tenant is "seen" when a forward reaches it: the key cap evicts the least recently seen first.
            reg = state.registry
            if reg.last_seen_ms is None or forward.ts_ms > reg.last_seen_ms:
                reg.last_seen_ms = forward.ts_ms
        detectors = self._set_of(state)
        env = self._env(state)
        for detector in detectors.tenant_forward if state.is_tenant else detectors.key_forward:
            effects = detector.on_forward(state, forward)
            if effects:
                self._apply(state, detector.name, effects, None, forward.ts_ms, env, detectors, outcome)
        return outcome

    def on_tick(self, state: KeyState, watermark_ms: int) -> Outcome:
        """Run every tick of `state` due at or before `watermark_ms`, earliest first, each at its own time."""
        outcome = Outcome(state)
        self._run_ticks(state, watermark_ms, outcome)
        return outcome

    def watermark(self, newest_ms: int) -> int:
        """The watermark once event time `newest_ms` has been seen: ticks at or before it are due."""
        return newest_ms - self.allowed_lateness_ms

    # -- mechanics -------------------------------------------------------------------------------------------

    @staticmethod
    def _env(state: KeyState) -> Env | None:
        if state.is_tenant:
            return None
        return "sandbox" if state.registry.env == "sandbox" else "live"

    def _run_ticks(self, state: KeyState, upto_ms: int, outcome: Outcome) -> None:
        ticks = state.ticks
        if not ticks or min(ticks.values()) > upto_ms:  # the common case (no timer due): nothing to look up
            return
        detectors = self._set_of(state)
        env = self._env(state)
        while ticks:
            name, at = min(ticks.items(), key=lambda item: (item[1], item[0]))
            if at > upto_ms:
                return
            del ticks[name]
            detector = detectors.by_name.get(name)
            if detector is None:  # a detector no longer configured: its timer goes with it
                continue
            effects = detector.on_tick(state, at)
            if effects:
                self._apply(state, name, effects, None, at, env, detectors, outcome)

    def _apply(
        self,
        state: KeyState,
        detector: str,
        effects: Effects,
        at: datetime | None,
        at_ms: int,
        env: Env | None,
        detectors: DetectorSet,
        outcome: Outcome,
    ) -> None:
        """Turn a hook's findings into alerts (or drop them: suppressed, episode already open or not open)."""
        for effect in effects or ():
            if isinstance(effect, Forward):
                outcome.forwards.append(effect)
                continue
            alert = self._alert(state, detector, effect, at, at_ms, env, detectors.max_suppressions)
            if alert is not None:
                outcome.alerts.append(alert)

    def _alert(
        self,
        state: KeyState,
        detector: str,
        finding: Finding,
        at: datetime | None,
        at_ms: int,
        env: Env | None,
        max_suppressions: int = DEFAULT_MAX_ENTRIES,
    ) -> Alert | None:
        declared = self._types.get(finding.type)
        if declared is None:
            raise ValueError(f"detector {detector!r} found an undeclared alert type {finding.type!r}")
        slot = suppression_key(finding.type, finding.discriminator)
        # The end of an episode that fired is never suppressed: the suppression its start set would hide it.
        if finding.episode != "close" and (finding.suppress_for_ms > 0 or slot in state.suppressed):
            if is_suppressed(state, slot, at_ms):
                return None
            if finding.suppress_for_ms > 0:
                suppress(
                    state,
                    slot,
                    now_ms=at_ms,
                    until_ms=at_ms + finding.suppress_for_ms,
                    max_entries=max_suppressions,
                )
        parts = finding.id_parts
        key_id = None if state.is_tenant else state.key_id
        status: Any = "firing"
        episode_id = None
        if finding.episode == "open":
            if slot in state.episodes:
                return None
            state.episodes[slot] = list(parts)
            parts = ("firing", *parts)
        elif finding.episode == "close":
            opened = state.episodes.pop(slot, None)
            if opened is None:
                return None
            status, parts = "resolved", ("resolved", *opened)
        if finding.episode is not None:
            episode_id = alert_id(finding.type, state.tenant, key_id or "", "episode", *parts[1:])
        time = at if at is not None else _time(at_ms)
        if finding.time_ms is not None:
            time = _time(finding.time_ms)
        return Alert.build(
            type=finding.type,
            id_parts=parts,
            source=self.source,
            time=time,
            tenant=state.tenant,
            key_id=key_id,
            env=env,
            severity=finding.severity or declared.severity,
            summary=finding.summary,
            evidence=finding.evidence,
            status=status,
            episode_id=episode_id,
            runbook_base=self.runbook_base,
        )


def _touch(state: KeyState, record: RequestRecord, when: int) -> None:
    """Key registry bookkeeping for one request: first/last seen and a count."""
    reg = state.registry
    reg.requests += 1
    if reg.first_seen_ms is None or when < reg.first_seen_ms:
        reg.first_seen_ms = when
    if reg.last_seen_ms is None or when > reg.last_seen_ms:
        reg.last_seen_ms = when
    if reg.env is None:
        reg.env = record.env
