"""The key registry: what the portal says about each key, kept from lifecycle events.

Lifecycle events can arrive late or out of order; everything here is decided by event time, so a late
`apiKey.created` never re-activates a key whose revocation was already seen.
"""

from __future__ import annotations

from typing import Any

from keywatch.contract.alerts import Alert, Severity
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.state import KeyState

# Forward kinds
ROTATED = "rotated"  # to the replaced key: "you were replaced by <key_id>"


def _ms(event: LifecycleEvent) -> int:
    return int(event.ts.timestamp() * 1000)


def _age(state: KeyState, now_ms: int) -> float | None:
    created = state.registry.created_ms
    return None if created is None else round(max(0, now_ms - created) / 1000.0, 3)


def apply_lifecycle(state: KeyState, event: LifecycleEvent, *, source: str) -> tuple[list[Alert], list[dict[str, Any]]]:
    """Update `state` from a lifecycle event; return its alert and any forwards to other keys.

    The alert is emitted every time the event is processed: its id is derived from the event, so a
    re-processed event after a crash yields a duplicate with the same id, never a different alert.
    """
    reg = state.registry
    when = _ms(event)
    forwards: list[dict[str, Any]] = []
    evidence: dict[str, Any] = {
        "actor": event.actor,
        "actor_ip": event.ip,
        "role": event.role,
        "env": event.env,
        "name": event.name,
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
            forwards.append(
                {
                    "tenant": event.tenant,
                    "key_id": event.replaces_key_id,
                    "kind": ROTATED,
                    "payload": {"replaced_by": event.key_id},
                    "ts_ms": when,
                }
            )
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
            last_seen=reg.last_seen_ms,
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
    alert = Alert.about(
        event,
        type=event.type,
        id_parts=(str(when), event.actor),
        source=source,
        severity=severity,
        summary=summary,
        evidence=evidence,
    )
    return [alert], forwards


def touch(state: KeyState, record: RequestRecord, when: int) -> None:
    """Registry bookkeeping for one request: first/last seen and a count."""
    reg = state.registry
    reg.requests += 1
    if reg.first_seen_ms is None or when < reg.first_seen_ms:
        reg.first_seen_ms = when
    if reg.last_seen_ms is None or when > reg.last_seen_ms:
        reg.last_seen_ms = when
    if reg.env is None:
        reg.env = record.env


def apply_forward(state: KeyState, kind: str, payload: dict[str, Any], when: int) -> list[dict[str, Any]]:
    """Apply a message from another key's processing; return further forwards."""
    if kind == ROTATED:
        state.registry.replaced_by = str(payload["replaced_by"])
    return []
