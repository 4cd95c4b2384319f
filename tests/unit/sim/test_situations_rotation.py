"""The rotation and revocation situations: labels where the rules must fire, look-alikes without labels, all
inside the scenario and after its learning period, deterministic from the seed."""

from __future__ import annotations

from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import HOUR_MS, REVOKED_IN_USE, ROTATION_STALLED, ScenarioConfig, build_plan
from keywatch.sim.situations_rotation import GRACE_MS, ROLLOUT_MS

CONFIG = ScenarioConfig(seed=4, days=4.0, tenants=6, keys=60, incidents_per_type=6)


def test_positives_are_labelled_at_the_rules_deadlines() -> None:
    """Stalled rotations are labelled at a new key's creation + 24 h (never used) or + 72 h (a service left
    behind), revocations in use at the revocation; every label inside the scenario, after learning."""
    plan = build_plan(CONFIG, PROFILES["default"])
    created = {k.key_id: k.created_ms for k in plan.keys}
    replaced_by = {k.replaces: k for k in plan.keys if k.replaces}
    ours = [i for i in plan.incidents if i.type in (ROTATION_STALLED, REVOKED_IN_USE)]
    assert sum(i.type == ROTATION_STALLED for i in ours) == sum(i.type == REVOKED_IN_USE for i in ours) == 6
    for incident in ours:
        key = incident.key
        assert CONFIG.learning_end_ms <= incident.start_ms == incident.end_ms < CONFIG.end_ms - 30 * 60_000
        if incident.type == REVOKED_IN_USE:
            assert key.revoked_ms == incident.start_ms
            assert key.normal_rate(incident.start_ms - 5 * 60_000, CONFIG.scale) > 0  # serving until then
            continue
        new = replaced_by[key.key_id]
        offset = incident.start_ms - created[new.key_id]
        assert offset in (GRACE_MS, ROLLOUT_MS)
        if offset == GRACE_MS:
            assert new.traffic_start_ms >= CONFIG.end_ms  # never deployed
        assert key.revoked_ms is None
        assert key.normal_rate(incident.start_ms - HOUR_MS, CONFIG.scale) > 0  # the old key still serves


def test_look_alike_revocations_come_after_the_traffic_stopped() -> None:
    """Every revocation without a label (benign rotations, decommissions, the look-alikes) comes after the
    key's last planned traffic by more than the revoked-while-in-use window, trickles aside."""
    plan = build_plan(CONFIG, PROFILES["default"])
    labelled = {i.key.key_id for i in plan.incidents if i.type == REVOKED_IN_USE}
    trickles = {key.key_id for key, _ in plan.extra}
    for key in plan.keys:
        if key.revoked_ms is None or key.key_id in labelled or key.key_id in trickles:
            continue
        if any(i.key is key for i in plan.incidents):
            continue  # a usedAfterRevoke key: its records come after the revocation
        if key.traffic_end_ms <= key.traffic_start_ms:
            continue  # never carried planned traffic (a key minted and revoked in a lifecycle burst)
        assert key.traffic_end_ms <= key.revoked_ms - 16 * 60_000, key.key_id


def test_the_same_seed_gives_the_same_situations() -> None:
    """Deterministic from the seed."""
    first, second = build_plan(CONFIG, PROFILES["default"]), build_plan(CONFIG, PROFILES["default"])
    assert [(i.id, i.key.key_id, i.start_ms) for i in first.incidents] == [
        (i.id, i.key.key_id, i.start_ms) for i in second.incidents
    ]
