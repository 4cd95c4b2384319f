"""Situations of issue #13 for the lifecycle-event rules (privilege escalation, keys managed outside the portal,
lifecycle bursts), added to a planned scenario.

Each situation is a function of the planner, run after the default scenario is planned, on keys of its own
(created for it), deterministic from the seed. Every lifecycle event of the scenario comes from the portal
with MFA unless a situation says otherwise.

Positives (labelled): a scope change from a read role to admin (or another wider role); a rotation whose new key
is admin replacing a reporting key; a key created through the `api` channel; a revocation without MFA; a
compromised admin creating and re-scoping 6-9 keys in 4-8 minutes (a lifecycle burst, and each re-scope to
admin a privilege escalation). (The default plan labels its own scope changes that widen a role, by the rank
rules, as escalations: the rule is meant to flag every widening, planned or not.)
Look-alikes (unlabelled: they count against precision if they fire): a narrowing scope change (admin ->
read_only), a same-role rotation, an admin doing 4 operations in 10 minutes, one doing 6 spread over 2 hours,
two admins each doing 3 in the same 10 minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from keywatch.core.roles import default_rank
from keywatch.sim.scenario import (
    HOUR_MS,
    LIFECYCLE_BURST,
    MINUTE_MS,
    OUTSIDE_PORTAL,
    PRIVILEGE,
    KeyPlan,
    Tenant,
)

if TYPE_CHECKING:
    from keywatch.sim.scenario import _Planner

Situation = Callable[["_Planner"], None]
WINDOW_MS = 10 * MINUTE_MS  # an actor's operations closer than this to another situation's are moved apart
BURST_OPERATIONS = 5  # operations within WINDOW_MS that make a burst


def _count(p: _Planner) -> int:
    """Look-alikes of each kind."""
    return max(2, p.c.per_type // 3)


def _half(p: _Planner) -> int:
    """Positives of each of the two situations of one type: together at least `per_type`."""
    return max(1, -(-p.c.per_type // 2))


def _in_use_key(p: _Planner, tenant: Tenant, role: str) -> KeyPlan:
    """A live key of its own with `role`, existing before the window and in use."""
    key = p.new_key(tenant, "live", p.t0)
    key.role, key.incident = role, True
    p.created_event(key, p.t0)
    return key


def _minted_key(p: _Planner, tenant: Tenant, role: str, created: int) -> KeyPlan:
    """A key created during the window that never carries traffic (its creation is the situation)."""
    key = p.new_key(tenant, p.rng.choice(("live", "live", "sandbox")), created)
    key.role, key.incident = role, True
    key.traffic_start_ms = key.traffic_end_ms = created
    return key


def _busy(p: _Planner, tenant: str, actor: str, start: int, end: int) -> bool:
    """Whether `actor` already has a lifecycle operation in `tenant` within a window of [start, end]."""
    lo, hi = start - WINDOW_MS, end + WINDOW_MS
    return any(lo <= ts <= hi and ev["tenant"] == tenant and ev["actor"] == actor for ts, ev in p.lifecycle)


def _slot(p: _Planner, span_ms: int, actors: int = 1) -> tuple[Tenant, list[str], int]:
    """A tenant, `actors` of its actors and a start time such that none of them acts within a window of it."""
    for _ in range(50):
        tenant, when = p.rng.choice(p.tenants), p.random_time()
        chosen = p.rng.sample(tenant.actors, actors)
        if not any(_busy(p, tenant.name, actor, when, when + span_ms) for actor in chosen):
            return tenant, chosen, when
    return tenant, chosen, when


def scope_escalation(p: _Planner) -> None:
    """A key's role widened from a read role to admin (or payments_write / standard)."""
    for i in range(_half(p)):
        tenant, [actor], when = _slot(p, MINUTE_MS)
        before = p.rng.choice(("read_only", "reporting"))
        after = "admin" if i % 3 != 2 else p.rng.choice(("payments_write", "standard"))
        key = _in_use_key(p, tenant, before)
        p.lifecycle_event("apiKey.scopeChanged", key, when, role=after, actor=actor)
        key.role = after
        p.add_incident(PRIVILEGE, key, when, when, f"Scope change {before} -> {after} by {actor}.")


def rotation_escalation(p: _Planner) -> None:
    """A reporting key rotated to a new key that is admin: the new key has more privilege than the one it replaces."""
    for _ in range(_half(p)):
        tenant, [actor], when = _slot(p, MINUTE_MS)
        old = _in_use_key(p, tenant, "reporting")
        new = p.new_key(tenant, old.env, when, app=old.app, name=old.name)
        new.role, new.replaces, new.incident = "admin", old.key_id, True
        switch_start = when + p.rng.randint(5, 60) * MINUTE_MS
        switch_end = switch_start + p.rng.randint(2, 20) * MINUTE_MS
        new.traffic_start_ms, new.ramp = switch_start, (switch_start, switch_end, True)
        old.ramp, old.traffic_end_ms = (switch_start, switch_end, False), switch_end
        p.created_event(new, when, actor=actor)
        p.add_incident(
            PRIVILEGE, new, when, when,
            f"Rotation of reporting key {old.key_id} to {new.key_id} with role admin, by {actor}.",
        )  # fmt: skip


def created_through_api(p: _Planner) -> None:
    """A key created through the `api` channel (with or without an MFA flag)."""
    for _ in range(_half(p)):
        tenant, [actor], when = _slot(p, MINUTE_MS)
        key = _minted_key(p, tenant, p.rng.choice(("standard", "payments_write", "admin")), when)
        mfa = p.rng.choice((None, False, True))
        p.created_event(key, when, actor=actor, channel="api", mfa=mfa)
        p.add_incident(OUTSIDE_PORTAL, key, when, when, f"Key created through the API channel by {actor} (mfa {mfa}).")


def revoked_without_mfa(p: _Planner) -> None:
    """A revocation in the portal without MFA (the key's traffic stopped hours before)."""
    for _ in range(_half(p)):
        tenant, [actor], when = _slot(p, MINUTE_MS)
        key = _in_use_key(p, tenant, p.rng.choice(("read_only", "standard", "reporting")))
        key.traffic_end_ms = when - p.rng.randint(2, 12) * HOUR_MS
        key.revoked_ms = when
        p.lifecycle_event("apiKey.revoked", key, when, actor=actor, mfa=False)
        p.add_incident(OUTSIDE_PORTAL, key, when, when, f"Key revoked in the portal by {actor} without MFA.")


def compromised_admin(p: _Planner) -> None:
    """A compromised admin session creating and re-scoping 6-9 keys in 4-8 minutes (in the portal, with the
    victim's MFA-verified session): a lifecycle burst; each re-scope to admin of a key created with a lower role
    is also a privilege escalation."""
    for _ in range(max(1, p.c.per_type)):
        rng = p.rng
        total, minutes = rng.randint(6, 9), rng.randint(4, 8)
        tenant, [actor], start = _slot(p, minutes * MINUTE_MS)
        times = sorted([start, start + minutes * MINUTE_MS, *(start + rng.randrange(minutes * MINUTE_MS)
                                                              for _ in range(total - 2))])  # fmt: skip
        created: list[KeyPlan] = []
        for i, at in enumerate(times):
            if created and (i % 3 == 2 or i == total - 1):
                key = created[-1] if rng.random() < 0.7 else rng.choice(created)
                if key.role == "admin":
                    key = created[0]
                before, key.role = key.role, "admin"
                p.lifecycle_event("apiKey.scopeChanged", key, at, role="admin", actor=actor)
                if default_rank("admin") > default_rank(before):
                    p.add_incident(PRIVILEGE, key, at, at, f"Re-scoped {before} -> admin by a compromised {actor}.")
            else:
                key = _minted_key(p, tenant, rng.choice(("read_only", "standard", "payments_write")), at)
                p.created_event(key, at, actor=actor)
                created.append(key)
        # labelled from the operation that makes the burst (the 5th) to the last one
        incident = p.add_incident(
            LIFECYCLE_BURST, created[0], times[BURST_OPERATIONS - 1], times[-1],
            f"Compromised admin {actor}: {total} lifecycle operations on {len(created)} new keys in {minutes} min.",
        )  # fmt: skip
        incident.tenant_alert = True


def narrowing_scope_change(p: _Planner) -> None:
    """Look-alike: an admin key narrowed to read_only (or reporting)."""
    for _ in range(_count(p)):
        tenant, [actor], when = _slot(p, MINUTE_MS)
        key = _in_use_key(p, tenant, "admin")
        key.role = p.rng.choice(("read_only", "reporting"))
        p.lifecycle_event("apiKey.scopeChanged", key, when, role=key.role, actor=actor)
        p.count("narrowing_scope_changes")


def same_role_rotation(p: _Planner) -> None:
    """Look-alike: a rotation to a new key with the same role, the old key revoked once traffic moved."""
    for _ in range(_count(p)):
        tenant, [_actor], when = _slot(p, MINUTE_MS)
        old = _in_use_key(p, tenant, p.rng.choice(("reporting", "admin", "standard")))
        switch_start = when + p.rng.randint(5, 60) * MINUTE_MS
        switch_end = switch_start + p.rng.randint(2, 20) * MINUTE_MS
        p.rotate(old, when, switch_start, switch_end, switch_end + p.rng.randint(30, 300) * MINUTE_MS)
        p.count("same_role_rotations")


def _operations(p: _Planner, tenant: Tenant, actor: str, times: list[int]) -> None:
    """Quiet operations by `actor`: creations of keys without traffic, every other one then revoked."""
    pending: KeyPlan | None = None
    for at in times:
        if pending is not None:
            pending.revoked_ms = at
            p.lifecycle_event("apiKey.revoked", pending, at, actor=actor)
            pending = None
        else:
            pending = _minted_key(p, tenant, p.rng.choice(("read_only", "standard", "reporting")), at)
            p.created_event(pending, at, actor=actor)


def four_in_ten_minutes(p: _Planner) -> None:
    """Look-alike: an admin doing 4 operations in 10 minutes."""
    for _ in range(_count(p)):
        tenant, [actor], start = _slot(p, 10 * MINUTE_MS)
        _operations(p, tenant, actor, sorted(start + p.rng.randrange(10 * MINUTE_MS) for _ in range(4)))
        p.count("four_operations_in_10_min")


def six_over_two_hours(p: _Planner) -> None:
    """Look-alike: an admin doing 6 operations spread over 2 hours (20-26 minutes apart)."""
    for _ in range(_count(p)):
        tenant, [actor], start = _slot(p, 2 * HOUR_MS + 10 * MINUTE_MS)
        times = [start]
        for _ in range(5):
            times.append(times[-1] + p.rng.randint(20 * 60, 26 * 60) * 1000)
        _operations(p, tenant, actor, times)
        p.count("six_operations_over_2_h")


def two_admins_three_each(p: _Planner) -> None:
    """Look-alike: two admins of one tenant each doing 3 operations in the same 10 minutes."""
    for _ in range(_count(p)):
        tenant, actors, start = _slot(p, 10 * MINUTE_MS, actors=2)
        for actor in actors:
            _operations(p, tenant, actor, sorted(start + p.rng.randrange(10 * MINUTE_MS) for _ in range(3)))
        p.count("two_admins_3_operations_each")


SITUATIONS: tuple[Situation, ...] = (
    scope_escalation,
    rotation_escalation,
    created_through_api,
    revoked_without_mfa,
    compromised_admin,
    narrowing_scope_change,
    same_role_rotation,
    four_in_ten_minutes,
    six_over_two_hours,
    two_admins_three_each,
)
