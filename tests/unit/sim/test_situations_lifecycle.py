"""The lifecycle situations of issue #13: portal events with MFA by default, labelled positives for the three
lifecycle rules, look-alikes that the scenario's own thresholds (the audit) find quiet."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from keywatch.core.roles import default_rank
from keywatch.sim.audit import audit
from keywatch.sim.generator import write_outputs
from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import (
    LIFECYCLE_BURST,
    MINUTE_MS,
    OUTSIDE_PORTAL,
    PRIVILEGE,
    Plan,
    ScenarioConfig,
    build_plan,
)

CONFIG = ScenarioConfig(seed=4, days=3.0, tenants=6, keys=50, scale=0.05, learning_days=1.5, incidents_per_type=6)


@pytest.fixture(scope="module")
def plan() -> Plan:
    """The default profile's plan."""
    return build_plan(CONFIG, PROFILES["default"])


def test_lifecycle_events_come_from_the_portal_with_mfa_unless_a_situation_says_otherwise(plan: Plan) -> None:
    """Every event has channel and mfa; the exceptions are exactly the labelled outside-the-portal ones."""
    outside = {(i.key.key_id, i.start_ms) for i in plan.incidents if i.type == OUTSIDE_PORTAL}
    odd = {(e["key_id"], ts) for ts, e in plan.lifecycle if e.get("channel") != "portal" or e.get("mfa") is not True}
    assert odd == outside
    assert len(outside) >= CONFIG.per_type
    assert all("channel" in e or e["key_id"] in {k for k, _ in outside} for _, e in plan.lifecycle)


def test_positives_of_every_lifecycle_type_are_labelled(plan: Plan) -> None:
    """Escalations (scope changes and rotations), outside-the-portal events and bursts, each at least per_type."""
    by_type: dict[str, int] = defaultdict(int)
    for incident in plan.incidents:
        by_type[incident.type] += 1
    assert by_type[PRIVILEGE] >= CONFIG.per_type
    assert by_type[OUTSIDE_PORTAL] >= CONFIG.per_type
    assert by_type[LIFECYCLE_BURST] == CONFIG.per_type
    rotations = [i for i in plan.incidents if i.type == PRIVILEGE and i.key.replaces]
    assert rotations
    assert all(i.key.role == "admin" for i in rotations)


def test_a_burst_is_one_actor_with_6_to_9_operations_in_4_to_8_minutes(plan: Plan) -> None:
    """Each burst label covers the operations from the 5th to the last of one actor in one tenant."""
    for incident in (i for i in plan.incidents if i.type == LIFECYCLE_BURST):
        assert incident.tenant_alert
        assert incident.label(str)["key_id"] == ""
        tenant = incident.key.tenant.name
        ops = [
            (ts, e["actor"])
            for ts, e in plan.lifecycle
            if e["tenant"] == tenant and incident.start_ms - 8 * MINUTE_MS <= ts <= incident.end_ms
        ]
        actors = defaultdict(list)
        for ts, actor in ops:
            actors[actor].append(ts)
        [times] = [t for t in actors.values() if len(t) >= 5]
        assert 6 <= len(times) <= 9
        assert 4 * MINUTE_MS <= times[-1] - times[0] <= 8 * MINUTE_MS
        assert (incident.start_ms, incident.end_ms) == (times[4], times[-1])


def test_benign_scope_changes_that_widen_a_role_are_labelled(plan: Plan) -> None:
    """The default plan's widening scope changes are labelled escalations; narrowing ones are not."""
    planned = [i for i in plan.incidents if i.type == PRIVILEGE and i.description.startswith("Planned")]
    for incident in planned:
        before, after = incident.description.split("change ", 1)[1].split(":", 1)[0].split(" -> ")
        assert default_rank(after) > default_rank(before)


def test_the_audit_finds_every_lifecycle_label_supported_and_nothing_unlabelled(plan: Plan, tmp_path: Path) -> None:
    """By the scenario's own thresholds, every lifecycle label is supported and no look-alike crosses them."""
    write_outputs(plan, tmp_path)
    report = audit(tmp_path, CONFIG.learning_end_ms)
    lifecycle_types = {PRIVILEGE, OUTSIDE_PORTAL, LIFECYCLE_BURST}
    assert [f for f in report.unlabelled if f.type in lifecycle_types] == []
    labelled = {i.id for i in plan.incidents if i.type in lifecycle_types}
    assert labelled <= set(report.confirmed)
