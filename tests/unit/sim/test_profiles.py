"""Scenario profiles: default is the standard plan plus the situations of issue #13; hard adds issue #12's."""

from __future__ import annotations

from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import ENV_MISMATCH, ERROR_CLUSTER, NEW_IP, SPIKE, ScenarioConfig, build_plan
from keywatch.sim.situations_rate import ALERT_MULTIPLE, RAMP_FACTOR, RAMP_MINUTES

CONFIG = ScenarioConfig(seed=3, days=3.0, tenants=5, keys=40, learning_days=1.5, incidents_per_type=6)


def test_default_profile_keeps_the_standard_plan_and_adds_the_hygiene_situations() -> None:
    """--profile default draws what build_plan draws without situations, then the situations of issue #13 on
    keys of their own (environment mismatches both ways, a key stolen the day it was created)."""
    plan, default = build_plan(CONFIG), build_plan(CONFIG, PROFILES["default"])
    assert [k.key_id for k in default.keys[: len(plan.keys)]] == [k.key_id for k in plan.keys]
    standard = {k.key_id for k in plan.keys}
    assert [(i.id, i.start_ms, i.records) for i in plan.incidents] == [
        (i.id, i.start_ms, i.records) for i in default.incidents if i.key.key_id in standard
    ]
    added = [i for i in default.incidents if i.key.key_id not in standard]
    assert {i.type for i in added} == {ENV_MISMATCH, NEW_IP}
    assert sum(i.type == ENV_MISMATCH for i in added) == 2 * 3  # both directions, 3 each at 6 per type


def test_hard_profile_keeps_the_default_part_and_adds_labelled_situations() -> None:
    """hard = the default plan's keys and incidents, plus situation keys with 4xx and ramp labels; the
    negative situations add no label; the same seed gives the same plan."""
    default, hard = build_plan(CONFIG), build_plan(CONFIG, PROFILES["hard"])
    assert [k.key_id for k in hard.keys[: len(default.keys)]] == [k.key_id for k in default.keys]
    default_ids = {i.id for i in default.incidents}
    added = [i for i in hard.incidents if i.key.key_id not in {k.key_id for k in default.keys}]
    assert {i.type for i in added} == {ERROR_CLUSTER, SPIKE, ENV_MISMATCH, NEW_IP}
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
