"""The key registry: lifecycle events in any order, decided by event time."""

from __future__ import annotations

from collections.abc import Callable

from coretest import MINUTE, T0

from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.core.engine import Engine


def test_created_makes_key_active_with_an_info_alert(
    engine_factory: Callable[..., Engine], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """apiKey.created sets status, role and creation time and emits a low-severity live alert."""
    outcome = engine_factory().on_lifecycle(None, lifecycle_factory())
    reg = outcome.state.registry
    assert (reg.status, reg.role, reg.created_ms, reg.created_by) == ("active", "read", T0, "alice@example.com")
    [alert] = outcome.alerts
    assert (alert.type, alert.severity, alert.data.runbook.rsplit("#", 1)[1]) == ("apiKey.created", "low", "created")


def test_revoked_records_time_and_actor(
    engine_factory: Callable[..., Engine], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """apiKey.revoked marks the key revoked with the revocation time and who did it."""
    engine = engine_factory()
    state = engine.on_lifecycle(None, lifecycle_factory()).state
    outcome = engine.on_lifecycle(state, lifecycle_factory(type="apiKey.revoked", ts=T0 + MINUTE, actor="bob"))
    assert (outcome.state.registry.status, outcome.state.registry.revoked_ms) == ("revoked", T0 + MINUTE)
    assert outcome.state.registry.revoked_by == "bob"
    assert outcome.alerts[0].type == "apiKey.revoked"


def test_scope_changed_keeps_previous_role(
    engine_factory: Callable[..., Engine], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """apiKey.scopeChanged records the new role and the one it replaced, in the evidence too."""
    engine = engine_factory()
    state = engine.on_lifecycle(None, lifecycle_factory()).state
    outcome = engine.on_lifecycle(state, lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + MINUTE, role="admin"))
    assert (outcome.state.registry.role, outcome.state.registry.previous_role) == ("admin", "read")
    assert outcome.alerts[0].data.evidence["new_role"] == "admin"


def test_late_created_after_revoke_does_not_reactivate(
    engine_factory: Callable[..., Engine], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """A created event processed after the revocation leaves the key revoked."""
    engine = engine_factory()
    state = engine.on_lifecycle(None, lifecycle_factory(type="apiKey.revoked", ts=T0 + MINUTE)).state
    state = engine.on_lifecycle(state, lifecycle_factory(ts=T0)).state
    assert state.registry.status == "revoked"
    assert state.registry.created_ms == T0


def test_late_scope_change_does_not_override_newer_role(
    engine_factory: Callable[..., Engine], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """An older scope change processed late does not replace the role set by a newer one."""
    engine = engine_factory()
    state = engine.on_lifecycle(
        None, lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + 2 * MINUTE, role="admin")
    ).state
    state = engine.on_lifecycle(
        state, lifecycle_factory(type="apiKey.scopeChanged", ts=T0 + MINUTE, role="write")
    ).state
    assert state.registry.role == "admin"


def test_lifecycle_alert_id_is_stable_on_reprocessing(
    engine_factory: Callable[..., Engine], lifecycle_factory: Callable[..., LifecycleEvent]
) -> None:
    """The same lifecycle event processed twice yields the same alert id."""
    first = engine_factory().on_lifecycle(None, lifecycle_factory()).alerts[0]
    second = engine_factory().on_lifecycle(None, lifecycle_factory()).alerts[0]
    assert first.id == second.id


def test_requests_update_first_and_last_seen_out_of_order(
    engine_factory: Callable[..., Engine], request_factory: Callable[..., RequestRecord]
) -> None:
    """A late request moves first_seen back but never moves last_seen back."""
    engine = engine_factory()
    state = engine.on_request(None, request_factory(ts=T0 + 5 * MINUTE)).state
    state = engine.on_request(state, request_factory(ts=T0)).state
    assert (state.registry.first_seen_ms, state.registry.last_seen_ms, state.registry.requests) == (
        T0,
        T0 + 5 * MINUTE,
        2,
    )
