"""Rotation and revocation situations (issue #13), added to a planned scenario: stalled rotations and keys revoked
while in use, and their look-alikes. Each runs after the default plan, on keys of its own (live keys that
existed before the window, always on), deterministic from the seed; rates are the ones the situation is about,
whatever `--scale`.

Positives (labelled):
- a rotation whose new key is never deployed: no request in the 24 h after its creation while the old key keeps
  serving (`apiKey.rotationStalled`, labelled at creation + 24 h; also at creation + 72 h when that is inside
  the scenario, as the old key still serves then);
- a rotation where one of the old key's two services (networks) never moves: 72 h after the rotation the old
  key still serves that service's 25-300 requests/hour (labelled at creation + 72 h; the rotation starts in
  the first hours of the scenario so that this falls inside it);
- a revocation of a key in full use, without a replacement (`apiKey.revokedWhileInUse`, labelled at the
  revocation);
- a revocation after a rotation in which the replacement took over only one of the key's two networks.
Look-alikes (unlabelled: they count against precision if they fire): a clean rotation (traffic moved in
2-30 min, revoked 20 min-6 h after the last request), a rotation overlap (both keys serving for a day while the
traffic moves, then revoked), a revocation of a key idle for 2-10 h, a revocation with a trickle of 2-3
requests in the 15 minutes before it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from keywatch.core.revocation_impact import RevocationImpactConfig
from keywatch.core.rotation import RotationConfig
from keywatch.sim.scenario import (
    HOUR_MS,
    MINUTE_MS,
    REVOKE_AFTER_DRAIN_MIN,
    REVOKED_IN_USE,
    ROTATION_STALLED,
    Host,
    Incident,
    KeyPlan,
    env_networks,
)

if TYPE_CHECKING:
    from keywatch.sim.scenario import _Planner
    from keywatch.sim.situations_rate import Situation

GRACE_MS = int(float(RotationConfig.model_fields["new_key_grace_hours"].default) * HOUR_MS)
ROLLOUT_MS = int(float(RotationConfig.model_fields["rollout_window_hours"].default) * HOUR_MS)
WINDOW_MS = int(RevocationImpactConfig.model_fields["window_minutes"].default) * MINUTE_MS
SLUGS = {ROTATION_STALLED: "rotation-stalled", REVOKED_IN_USE: "revoked-in-use"}
IN_FLIGHT_MS = 3_000  # requests already on their way when a key is revoked end within this


def _count(p: _Planner) -> int:
    """Look-alikes of each kind."""
    return max(2, p.c.per_type // 3)


def _half(p: _Planner, first: bool) -> int:
    """Positives of each of the two kinds of a type: together the scenario's incidents per type."""
    return (p.c.per_type + 1) // 2 if first else max(1, p.c.per_type // 2)


def _label(p: _Planner, kind: str, key: KeyPlan, at: int, text: str) -> None:
    number = sum(1 for i in p.incidents if i.type == kind) + 1
    p.incidents.append(Incident(f"inc-{SLUGS[kind]}-{number:03d}", kind, key, at, at, text))
    key.busy.append((at - 2 * HOUR_MS, at + 2 * HOUR_MS))


def _key(p: _Planner, rate: float, *, two_networks: bool = False) -> KeyPlan:
    """A live key of its own, existing before the window, always on, `rate` requests/min at its peak; with
    `two_networks`, its hosts are in exactly two of the tenant's IPv4 networks (two services)."""
    # (the live networks: the tenant's sandbox networks are its test and CI hosts)
    tenants = [t for t in p.tenants if len(env_networks(t, "live")[0]) >= 2] if two_networks else []
    tenant = p.rng.choice(tenants or p.tenants)
    key = p.new_key(tenant, "live", p.t0)
    app = key.app
    app.peak_rate, app.trough, app.schedule = rate / p.c.scale, 0.7, "always"
    if two_networks:
        nets = p.rng.sample(env_networks(tenant, "live")[0], 2)
        used: set[str] = set()
        app.hosts = [
            p.host(net, used, p.t0 - 24 * HOUR_MS, p.end + 24 * HOUR_MS)
            for net in nets
            for _ in range(p.rng.randint(1, 3))
        ]
    key.incident = True
    p.created_event(key, p.t0)
    return key


def _rate(p: _Planner, low: float, high: float) -> float:
    return float(low * (high / low) ** p.rng.random())


def _new_key(p: _Planner, old: KeyPlan, created: int) -> KeyPlan:
    """The replacement of `old`, created at `created` with `replaces_key_id` (its traffic is set by the caller)."""
    new = p.new_key(old.tenant, old.env, created, app=old.app, name=old.name)
    new.role, new.replaces, new.incident = old.role, old.key_id, True
    p.created_event(new, created)
    return new


def _revoke(p: _Planner, key: KeyPlan, at: int) -> None:
    key.revoked_ms = at
    p.lifecycle_event("apiKey.revoked", key, at)


def _split_service(p: _Planner, old: KeyPlan, switch: int, new_share: float) -> KeyPlan:
    """From `switch` on, the old key's first network (service) runs on a new key; the other stays on the old
    key at the rest of the traffic. The new key is returned (created 10-90 min before the switch)."""
    created = switch - p.rng.randint(10, 90) * MINUTE_MS
    first = old.app.hosts[0].network
    moved = [h for h in old.app.hosts if h.network == first]
    new_app = dataclasses.replace(
        old.app,
        seed=f"{old.app.seed}/moved",
        hosts=[Host(h.ip, h.network, switch, h.end_ms) for h in moved],
        peak_rate=old.app.peak_rate * new_share,
        bumps=[],
        idle=[],
    )
    new = p.new_key(old.tenant, old.env, created, app=new_app, name=old.name)
    new.role, new.replaces, new.incident = old.role, old.key_id, True
    new.traffic_start_ms = switch
    p.created_event(new, created)
    old.app.hosts = [h if h.network != first else Host(h.ip, h.network, h.start_ms, switch) for h in old.app.hosts]
    old.app.bumps.append((switch, p.end + 24 * HOUR_MS, 1.0 - new_share))
    return new


def _early(p: _Planner) -> int | None:
    """A rotation start early enough that creation + the rollout window (+ 1 h) is inside the scenario."""
    latest, earliest = _early_range(p)
    return p.rng.randrange(earliest, latest) if latest > earliest else None


def _early_range(p: _Planner) -> tuple[int, int]:
    return p.end - ROLLOUT_MS - 5 * HOUR_MS, p.t0 + HOUR_MS  # the switch comes up to 3 h after the start


def _rollout_fits(p: _Planner) -> bool:
    latest, earliest = _early_range(p)
    return latest > earliest


def new_key_never_deployed(p: _Planner) -> None:
    """Positive: the new key of a rotation is never used while the old key serves 0.5-12 requests/min (all the
    positives of the type when the scenario is too short for `service_left_behind`)."""
    for _ in range(_half(p, True) + (0 if _rollout_fits(p) else _half(p, False))):
        earliest = max(p.t0 + HOUR_MS, p.learn_end - GRACE_MS + HOUR_MS)
        latest = p.end - GRACE_MS - HOUR_MS
        if latest <= earliest:
            return
        old = _key(p, _rate(p, 0.5, 12.0))
        created = p.rng.randrange(earliest, latest)
        new = _new_key(p, old, created)
        new.traffic_start_ms = new.traffic_end_ms = p.end  # never deployed
        _label(
            p, ROTATION_STALLED, old, created + GRACE_MS,
            f"Rotation to {new.key_id} never deployed: no request on it in the 24 h after its creation while "
            f"{old.key_id} keeps serving.",
        )  # fmt: skip
        if created + ROLLOUT_MS + HOUR_MS < p.end:
            _label(p, ROTATION_STALLED, old, created + ROLLOUT_MS, "... and the old key still serves at 72 h.")


def service_left_behind(p: _Planner) -> None:
    """Positive: one of the old key's two services moves to the new key, the other never does."""
    for _ in range(_half(p, False)):
        created = _early(p)
        if created is None:
            return
        old = _key(p, _rate(p, 1.5, 12.0), two_networks=True)
        switch = created + p.rng.randint(10, 180) * MINUTE_MS
        new = _split_service(p, old, switch, 0.6)
        created = new.created_ms
        left = sorted({h.network for h in old.app.hosts if h.end_ms > switch})
        _label(
            p, ROTATION_STALLED, old, created + ROLLOUT_MS,
            f"Rotation to {new.key_id}: the service on {', '.join(left)} never moved; {old.key_id} still serves "
            "it 72 h after the rotation started.",
        )  # fmt: skip


def revoked_in_full_use(p: _Planner) -> None:
    """Positive: a key serving 2-12 requests/min is revoked without a replacement."""
    for _ in range(_half(p, True)):
        key, at = _key(p, _rate(p, 2.0, 12.0)), p.random_time()
        key.traffic_end_ms = at + p.rng.randint(0, IN_FLIGHT_MS)
        _revoke(p, key, at)
        _label(p, REVOKED_IN_USE, key, at, f"Key {key.key_id} revoked in full use, no replacement: its services fail.")


def revoked_half_moved(p: _Planner) -> None:
    """Positive: after a rotation the replacement took over one of the key's two networks; the key is revoked
    2-20 h later while the other network still uses it."""
    for _ in range(_half(p, False)):
        old = _key(p, _rate(p, 5.0, 15.0), two_networks=True)
        at = p.random_time()
        switch = at - p.rng.randint(2, 20) * HOUR_MS
        new = _split_service(p, old, max(p.t0 + HOUR_MS, switch), 0.5)
        old.traffic_end_ms = at + p.rng.randint(0, IN_FLIGHT_MS)
        _revoke(p, old, at)
        _label(
            p, REVOKED_IN_USE, old, at,
            f"Key {old.key_id} revoked while one of its two networks had not moved to {new.key_id}.",
        )  # fmt: skip


def clean_rotation(p: _Planner) -> None:
    """Negative: traffic moves to the new key in 2-30 min; the old key is revoked 20 min-6 h after its last
    request."""
    for _ in range(_count(p)):
        old = _key(p, _rate(p, 0.5, 15.0))
        created = p.random_time() - 8 * HOUR_MS
        switch = created + p.rng.randint(5, 120) * MINUTE_MS
        end = switch + p.rng.randint(2, 30) * MINUTE_MS
        new = p.rotate(old, created, switch, end, end + p.rng.randint(REVOKE_AFTER_DRAIN_MIN + 3, 360) * MINUTE_MS)
        new.incident = True
        p.count("clean_rotations")


def rotation_overlap(p: _Planner) -> None:
    """Negative: both keys serve for about a day while the traffic moves over; the old key is revoked 1-10 h
    after its last request."""
    for _ in range(_count(p)):
        old = _key(p, _rate(p, 1.0, 12.0))
        created = p.t0 + p.rng.randrange(2 * HOUR_MS, max(3 * HOUR_MS, p.end - p.t0 - 40 * HOUR_MS))
        switch = created + p.rng.randint(10, 60) * MINUTE_MS
        end = switch + p.rng.randint(20, 30) * HOUR_MS
        new = p.rotate(old, created, switch, end, end + p.rng.randint(1, 10) * HOUR_MS)
        new.incident = True
        p.count("rotation_overlaps")


def revoked_idle(p: _Planner) -> None:
    """Negative: a key whose traffic stopped 2-10 h ago is revoked."""
    for _ in range(_count(p)):
        key, at = _key(p, _rate(p, 1.0, 12.0)), p.random_time()
        key.traffic_end_ms = at - p.rng.randint(2, 10) * HOUR_MS
        _revoke(p, key, at)
        p.count("revoked_idle_keys")


def revoked_trickle(p: _Planner) -> None:
    """Negative: a key idle for hours has 2-3 requests (a forgotten health check) in the 15 minutes before its
    revocation."""
    for _ in range(_count(p)):
        key, at = _key(p, _rate(p, 1.0, 8.0)), p.random_time()
        key.traffic_end_ms = at - p.rng.randint(3, 12) * HOUR_MS
        host = p.rng.choice(key.app.hosts)
        agent = key.app.agent_at(at)
        times = sorted(at - p.rng.randint(70, WINDOW_MS // 1000) * 1000 for _ in range(p.rng.randint(2, 3)))
        p.extra.append(
            (key, [p.record(key, ts, host.ip, "GET", "/v1/account", 200, p.rng.uniform(8, 30), agent) for ts in times])
        )
        _revoke(p, key, at)
        p.count("revoked_trickles")


SITUATIONS: tuple[Situation, ...] = (
    new_key_never_deployed,
    service_left_behind,
    revoked_in_full_use,
    revoked_half_moved,
    clean_rotation,
    rotation_overlap,
    revoked_idle,
    revoked_trickle,
)
