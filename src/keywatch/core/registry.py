"""The key registry: what the portal says about each key, kept from lifecycle events; the `lifecycle` detector
emits one alert per lifecycle event.

Lifecycle events can arrive late or out of order; everything here is decided by event time, so a late
`apiKey.created` never re-activates a key whose revocation was already seen. The registry itself lives in
`KeyState.registry` (every detector reads it); this detector keeps no state of its own.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from keywatch.contract.alerts import Severity
from keywatch.contract.events import LifecycleEvent, format_time
from keywatch.core.engine import Forward
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "lifecycle"

# Forward kinds
ROTATED = "rotated"  # to the replaced key: "you were replaced by <key_id>" (with its role, actor, channel, mfa)


def _ms(event: LifecycleEvent) -> int:
    return int(event.ts.timestamp() * 1000)


def _age(state: KeyState, now_ms: int) -> float | None:
    created = state.registry.created_ms
    return None if created is None else round(max(0, now_ms - created) / 1000.0, 3)


def apply_lifecycle(state: KeyState, event: LifecycleEvent) -> tuple[Finding, list[Forward]]:
    """Update `state` from a lifecycle event; return its alert's finding and any forwards to other keys.

    The alert is emitted every time the event is processed: its id is derived from the event, so a
    re-processed event after a crash yields a duplicate with the same id, never a different alert.
    """
    reg = state.registry
    when = _ms(event)
    forwards: list[Forward] = []
    evidence: dict[str, Any] = {
        "actor": event.actor,
        "actor_ip": event.ip,
        "role": event.role,
        "env": event.env,
        "name": event.name,
        "channel": event.channel,
        "mfa": event.mfa,
    }
    severity: Severity = "info"
    if event.type == "apiKey.created":
        reg.env, reg.name = event.env, event.name
        if reg.role_changed_ms is None or when >= reg.role_changed_ms:
            reg.role = event.role
        reg.created_ms, reg.created_by = when, event.actor
        if reg.status != "revoked":
            reg.status = "active"
        if event.replaces_key_id:
            reg.replaces = event.replaces_key_id
            # The new key's role and who made it ride along: the replaced key answers with its own role
            # (`keywatch.core.privilege`, a rotation to a wider role).
            about: dict[str, Any] = {"replaced_by": event.key_id, "role": event.role, "actor": event.actor}
            about.update(channel=event.channel, mfa=event.mfa, actor_ip=event.ip)
            forwards.append(Forward(event.tenant, event.replaces_key_id, ROTATED, about, when))
        evidence["rotation"] = {"replaces_key_id": event.replaces_key_id} if event.replaces_key_id else None
        severity = "low" if event.env == "live" else "info"
        what = f"as a rotation of {event.replaces_key_id}" if event.replaces_key_id else f"with role {event.role}"
        summary = f"{event.env.capitalize()} key {event.key_id} ({event.name!r}) was created by {event.actor} {what}."
    elif event.type == "apiKey.revoked":
        first = reg.revoked_ms is None or when < reg.revoked_ms
        if first:
            reg.revoked_ms, reg.revoked_by = when, event.actor
        reg.status = "revoked"
        reg.env = reg.env or event.env
        reg.name = reg.name or event.name
        reg.role = reg.role or event.role
        evidence.update(
            key_age_seconds=_age(state, when),
            last_seen=None if reg.last_seen_ms is None else format_time(reg.last_seen_ms),
            requests_seen=reg.requests,
            rotation={"replaces_key_id": reg.replaces, "replaced_by": reg.replaced_by},
        )
        severity = "low" if event.env == "live" else "info"
        summary = f"{event.env.capitalize()} key {event.key_id} ({event.name!r}) was revoked by {event.actor}."
    else:  # apiKey.scopeChanged
        previous = reg.role
        if reg.role_changed_ms is None or when >= reg.role_changed_ms:
            reg.previous_role, reg.role, reg.role_changed_ms = previous, event.role, when
        reg.env = reg.env or event.env
        reg.name = reg.name or event.name
        evidence.update(previous_role=previous, new_role=event.role)
        severity = "low" if event.env == "live" else "info"
        summary = (
            f"Role of {event.env} key {event.key_id} ({event.name!r}) was changed "
            f"from {previous or 'unknown'} to {event.role} by {event.actor}."
        )
    finding = Finding(
        type=event.type,
        id_parts=(str(when), event.actor),
        severity=severity,
        summary=summary,
        evidence=evidence,
    )
    return finding, forwards


class LifecycleConfig(BaseModel):
    """The lifecycle alerts have no settings (`[detection.lifecycle]` exists, empty)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyRegistry(Detector[None]):
    """Keeps the key registry from lifecycle events and hand-offs; one alert per lifecycle event."""

    def on_lifecycle(self, key: KeyState, event: LifecycleEvent, ts_ms: int) -> Effects:
        """Update the registry; the event's alert and, on rotation, a hand-off to the replaced key."""
        finding, forwards = apply_lifecycle(key, event)
        return [finding, *forwards]

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """`rotated`: remember which key replaced this one."""
        if forward.kind == ROTATED:
            key.registry.replaced_by = str(forward.payload["replaced_by"])
        return None


def _build(config: LifecycleConfig, context: BuildContext) -> KeyRegistry:
    return KeyRegistry()


SPEC: DetectorSpec[LifecycleConfig, None] = DetectorSpec(
    name=NAME,
    alerts=(
        AlertSpec("apiKey.created", "low"),
        AlertSpec("apiKey.scopeChanged", "low"),
        AlertSpec("apiKey.revoked", "low"),
    ),
    config=LifecycleConfig,
    state=None,
    build=_build,
    summary="apiKey.created, apiKey.scopeChanged, apiKey.revoked",
)
