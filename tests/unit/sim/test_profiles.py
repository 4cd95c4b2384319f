"""Scenario profiles: default is the standard plan followed by the hygiene situations of issue #13 (the standard
part unchanged); hard adds the situations of issue #12 as well."""

from __future__ import annotations

from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import ERROR_CLUSTER, NEW_IP, SHARED, SPIKE, ScenarioConfig, build_plan
from keywatch.sim.situations_rate import ALERT_MULTIPLE, RAMP_FACTOR, RAMP_MINUTES

CONFIG = ScenarioConfig(seed=3, days=3.0, tenants=5, keys=40, learning_days=1.5, incidents_per_type=6)


def test_default_profile_keeps_the_standard_plan() -> None:
    """--profile default draws exactly what build_plan draws without situations, then adds keys of its own."""
    plan, default = build_plan(CONFIG), build_plan(CONFIG, PROFILES["default"])
    assert [k.key_id for k in plan.keys] == [k.key_id for k in default.keys[: len(plan.keys)]]
    standard = {k.key_id for k in plan.keys}
    assert [(i.id, i.start_ms, i.records) for i in plan.incidents] == [
        (i.id, i.start_ms, i.records) for i in default.incidents if i.key.key_id in standard
    ]


def test_hard_profile_keeps_the_default_part_and_adds_labelled_situations() -> None:
    """hard = the default plan's keys and incidents, plus situation keys with 4xx and ramp labels; the
    negative situations add no label; the same seed gives the same plan."""
    default, hard = build_plan(CONFIG), build_plan(CONFIG, PROFILES["hard"])
    assert [k.key_id for k in hard.keys[: len(default.keys)]] == [k.key_id for k in default.keys]
    default_ids = {i.id for i in default.incidents}
    added = [i for i in hard.incidents if i.key.key_id not in {k.key_id for k in default.keys}]
    assert {i.type for i in added} == {ERROR_CLUSTER, SPIKE, SHARED, NEW_IP}
    rate = [i for i in added if i.type in (ERROR_CLUSTER, SPIKE)]
    assert len(rate) == 4 * 2  # stuffing, enumeration, busy probe, ramp: two each at 6 incidents per type
    assert default_ids <= {i.id for i in hard.incidents} | {i.id for i in added}
    ramps = [i for i in rate if i.type == SPIKE]
    for ramp in ramps:
        # labelled from the first minute at the lowest alerting multiple (x3) to the end of the flat part
        assert ramp.key.normal_rate(ramp.start_ms, CONFIG.scale) >= ALERT_MULTIPLE * 0.7 * ramp.key.app.peak_rate
        assert ramp.end_ms - ramp.start_ms < 2 * RAMP_MINUTES * 60_000
        assert f"x{RAMP_FACTOR:.0f}" in ramp.description
    assert [(i.id, i.start_ms) for i in build_plan(CONFIG, PROFILES["hard"]).incidents] == [
        (i.id, i.start_ms) for i in hard.incidents
    ]
