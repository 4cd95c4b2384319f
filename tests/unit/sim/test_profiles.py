"""Scenario profiles: default is the standard plan plus the key hygiene situations of issue #13 (the standard part
unchanged); hard adds the situations of issue #12 too."""

from __future__ import annotations

from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import (
    DAY_MS,
    ERROR_CLUSTER,
    INCIDENT_TYPES,
    PLANNED_TYPES,
    ROTATION_OVERDUE,
    SPIKE,
    UNUSED,
    ScenarioConfig,
    build_plan,
)
from keywatch.sim.situations_hygiene_age import IDLE_MS, MAX_AGE_MS
from keywatch.sim.situations_rate import ALERT_MULTIPLE, RAMP_FACTOR, RAMP_MINUTES

CONFIG = ScenarioConfig(seed=3, days=3.0, tenants=5, keys=40, learning_days=1.5, incidents_per_type=6)
HYGIENE_TYPES = set(INCIDENT_TYPES) - set(PLANNED_TYPES)


def test_default_profile_is_the_standard_plan_plus_hygiene_situations() -> None:
    """--profile default draws what build_plan draws without situations, then the #13 situations on keys of
    their own: a label of every hygiene type (and the new networks of single-page apps and stolen keys)."""
    plan, default = build_plan(CONFIG), build_plan(CONFIG, PROFILES["default"])
    assert [k.key_id for k in default.keys[: len(plan.keys)]] == [k.key_id for k in plan.keys]
    standard = {i.id: (i.start_ms, i.records) for i in plan.incidents}
    assert {i.id: (i.start_ms, i.records) for i in default.incidents if i.id in standard} == standard
    own = {k.key_id for k in plan.keys}
    added = [i for i in default.incidents if i.id not in standard]
    assert all(i.key.key_id not in own for i in added)
    assert HYGIENE_TYPES <= {i.type for i in added} <= set(INCIDENT_TYPES)


def test_hygiene_situations_are_old_enough_and_idle_enough() -> None:
    """Overdue labels are on keys created more than the age before the label; unused labels are on keys with no
    materialised request in the idle days before the label, in a tenant whose history starts earlier."""
    plan = build_plan(CONFIG, PROFILES["default"])
    extra = {key.key_id: records for key, records in plan.extra}
    created = {event["key_id"]: ts for ts, event in plan.lifecycle if event["type"] == "apiKey.created"}
    for incident in plan.incidents:
        key = incident.key.key_id
        if incident.type == ROTATION_OVERDUE:
            assert incident.start_ms - created[key] >= MAX_AGE_MS
        elif incident.type == UNUSED:
            times = [ts for ts, _ in extra.get(key, [])]
            assert all(ts <= incident.start_ms - IDLE_MS for ts in times)
            assert min(ts for _, records in plan.extra for ts, _ in records) < plan.config.start_ms - 30 * DAY_MS


def test_hard_profile_keeps_the_default_part_and_adds_labelled_situations() -> None:
    """hard = the default plan's keys and incidents, plus situation keys with 4xx and ramp labels and the
    hygiene situations; the negative situations add no label; the same seed gives the same plan."""
    default, hard = build_plan(CONFIG), build_plan(CONFIG, PROFILES["hard"])
    assert [k.key_id for k in hard.keys[: len(default.keys)]] == [k.key_id for k in default.keys]
    default_ids = {i.id for i in default.incidents}
    added = [i for i in hard.incidents if i.key.key_id not in {k.key_id for k in default.keys}]
    rate = [i for i in added if i.type in (ERROR_CLUSTER, SPIKE)]
    assert {i.type for i in added} >= HYGIENE_TYPES
    assert {i.type for i in rate} == {ERROR_CLUSTER, SPIKE}
    assert len(rate) >= 6  # stuffing, enumeration, busy probe, ramp: about two each at 6 incidents per type
    assert default_ids <= {i.id for i in hard.incidents}
    ramps = [i for i in rate if i.type == SPIKE]
    for ramp in ramps:
        # labelled from the first minute at the lowest alerting multiple (x3) to the end of the flat part
        assert ramp.key.normal_rate(ramp.start_ms, CONFIG.scale) >= ALERT_MULTIPLE * 0.7 * ramp.key.app.peak_rate
        assert ramp.end_ms - ramp.start_ms < 2 * RAMP_MINUTES * 60_000
        assert f"x{RAMP_FACTOR:.0f}" in ramp.description
    assert [(i.id, i.start_ms) for i in build_plan(CONFIG, PROFILES["hard"]).incidents] == [
        (i.id, i.start_ms) for i in hard.incidents
    ]
