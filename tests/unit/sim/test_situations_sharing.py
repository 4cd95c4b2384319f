"""The shared-key situations: two services and a third-party integration labelled, the look-alikes (rotation
overlap, autoscaling, SDK upgrade, migration, sidecar, nightly job) unlabelled; scored end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from keywatch.config import Settings
from keywatch.core.config import default_detection_config
from keywatch.core.wiring import build_engine
from keywatch.replay import replay
from keywatch.sim.evaluate import evaluate, read_alerts
from keywatch.sim.generator import write_outputs
from keywatch.sim.labels import read_labels
from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import NEW_IP, SHARED, Plan, ScenarioConfig, build_plan
from keywatch.sim.situations_sharing import CLOUD_FIRST, SITUATIONS

CONFIG = ScenarioConfig(seed=5, days=3.0, tenants=5, keys=40, scale=0.3, incidents_per_type=4)


@pytest.fixture(scope="module")
def plan() -> Plan:
    """The small scenario with the sharing situations."""
    return build_plan(CONFIG, SITUATIONS)


def test_positives_are_labelled_and_look_alikes_counted(plan: Plan) -> None:
    """Two services and third-party integrations carry sharedAcrossServices labels (an integration also a
    usedFromNewIp label at its first request); every look-alike is there, unlabelled."""
    shared = [i for i in plan.incidents if i.type == SHARED]
    assert len(shared) == 4
    assert all(i.records and i.start_ms < i.end_ms for i in shared)
    assert len([i for i in plan.incidents if i.id.startswith("inc-shared-newip-")]) == 2
    assert {i.type for i in plan.incidents if i.id.startswith("inc-shared")} == {SHARED, NEW_IP}
    for what in ("rotation_overlaps", "autoscaling", "sdk_upgrades", "migrations", "sidecars", "nightly_jobs"):
        assert plan.benign[f"sharing_{what}"] == 2
    assert all(n["network"].startswith("100.") for n in plan.networks if n["role"] == "cloud")
    assert all(CLOUD_FIRST <= int(n["network"].split(".")[1]) < 128 for n in plan.networks if n["role"] == "cloud")


def test_the_situations_are_in_both_profiles() -> None:
    """Default and hard hold every sharing situation."""
    assert set(SITUATIONS) <= set(PROFILES["default"])
    assert set(SITUATIONS) <= set(PROFILES["hard"])


def test_the_same_seed_gives_the_same_situations() -> None:
    """Deterministic from the seed."""
    one, two = build_plan(CONFIG, SITUATIONS), build_plan(CONFIG, SITUATIONS)
    assert [(i.id, i.start_ms, i.records) for i in one.incidents] == [
        (i.id, i.start_ms, i.records) for i in two.incidents
    ]


def test_sharing_scores_end_to_end(tmp_path: Path, plan: Plan) -> None:
    """Replayed with the default settings: every shared key found, no look-alike or ordinary key alerts, and
    the integrations' new networks are found by usedFromNewIp."""
    write_outputs(plan, tmp_path)
    engine = build_engine(default_detection_config(), Settings().alert_source)
    with (
        (tmp_path / "requests.jsonl").open("rb") as requests,
        (tmp_path / "lifecycle.jsonl").open("rb") as life,
        (tmp_path / "alerts.jsonl").open("w") as out,
    ):
        replay(requests, life, engine, lambda a: out.write(a.model_dump_json() + "\n"))
    scores = evaluate(read_alerts(tmp_path / "alerts.jsonl"), read_labels(tmp_path / "labels.jsonl"))
    assert (scores[SHARED].precision, scores[SHARED].recall) == (1.0, 1.0), scores[SHARED].as_dict(show_fp=5)
    assert scores[NEW_IP].recall == 1.0, scores[NEW_IP].as_dict(show_fp=5)
