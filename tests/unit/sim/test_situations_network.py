"""The --hard-network situations: residential browsers labelled as the folded rule's truth, keys created long
before the logs, trusted CI runners written as config; scored end to end on a small scenario."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from keywatch.config import Settings
from keywatch.core.config import detection_config_from_mapping, load_detection_config
from keywatch.core.wiring import build_engine
from keywatch.replay import replay
from keywatch.sim.evaluate import evaluate, read_alerts
from keywatch.sim.generator import write_outputs
from keywatch.sim.labels import read_labels
from keywatch.sim.scenario import BACKDATE_DAYS, DAY_MS, NEW_IP, Plan, ScenarioConfig, build_plan
from keywatch.sim.situations_network import OLD_KEY_AGE_MS, trusted_config

HARD = ScenarioConfig(seed=3, days=3.0, tenants=5, keys=40, scale=0.2, incidents_per_type=2, hard_network=True)


@pytest.fixture(scope="module")
def plan() -> Plan:
    """The small hard scenario's plan."""
    return build_plan(HARD)


def test_browser_keys_are_labelled_two_networks_and_one_fan_out(plan: Plan) -> None:
    """Each residential-browser key has exactly three usedFromNewIp labels: two networks, then many networks."""
    browsers = [i for i in plan.incidents if i.id.startswith("inc-browsers-")]
    by_key: dict[str, list[str]] = {}
    for incident in browsers:
        by_key.setdefault(incident.key.subject, []).append(incident.id.rsplit("-", 1)[1])
    assert len(by_key) == 2
    assert all(sorted(kinds) == ["many", "net1", "net2"] for kinds in by_key.values())
    assert sum(len(i.records) for i in browsers) >= 2 * 150
    assert {i.type for i in browsers} == {NEW_IP}


def test_old_keys_are_created_88_days_before_the_logs(plan: Plan) -> None:
    """Four keys are created 88 days before the start and carry traffic from it, from 2+ networks."""
    old = [k for k in plan.keys if k.created_ms == plan.config.start_ms - OLD_KEY_AGE_MS]
    assert len(old) == 4
    assert all(k.traffic_start_ms == plan.config.start_ms for k in old)
    assert all(len({h.network for h in k.app.hosts}) >= 2 for k in old)
    # (keys existing before the window are created up to BACKDATE_DAYS before it)
    before = plan.config.start_ms - BACKDATE_DAYS * DAY_MS
    created = [ts for ts, e in plan.lifecycle if e["type"] == "apiKey.created" and ts < before]
    assert len(created) == 4


def test_trusted_config_loads_and_names_the_tenants_ci_list(plan: Plan) -> None:
    """The written keywatch.toml is valid [detection] config with the CI range as the tenant's list."""
    text = trusted_config(plan)
    config = detection_config_from_mapping(tomllib.loads(text)["detection"])
    [lists] = config.trusted.tenant.values()
    assert list(lists) == ["ci-runners"]
    assert lists["ci-runners"][0].startswith("198.18.")


def test_without_the_flag_no_situation_is_added() -> None:
    """The default scenario has none of these keys or labels (its output stays what it was)."""
    plain = build_plan(ScenarioConfig(seed=3, days=3.0, tenants=5, keys=40, scale=0.2, incidents_per_type=2))
    assert not [i for i in plain.incidents if i.id.startswith(("inc-browsers-", "inc-oldkey-"))]
    assert not [n for n in plain.networks if n["role"] in ("trusted", "residential")]


def test_hard_scenario_scores(tmp_path: Path) -> None:
    """Replayed with its config: usedFromNewIp precision and recall 1.0, at most 3 new-IP alerts per key a day."""
    write_outputs(build_plan(HARD), tmp_path)
    (tmp_path / "keywatch.toml").write_text(trusted_config(build_plan(HARD)), encoding="utf-8")
    engine = build_engine(load_detection_config(tmp_path / "keywatch.toml"), Settings().alert_source)
    with (
        (tmp_path / "requests.jsonl").open("rb") as requests,
        (tmp_path / "lifecycle.jsonl").open("rb") as life,
        (tmp_path / "alerts.jsonl").open("w") as out,
    ):
        replay(requests, life, engine, lambda a: out.write(a.model_dump_json() + "\n"))
    alerts = read_alerts(tmp_path / "alerts.jsonl")
    score = evaluate(alerts, read_labels(tmp_path / "labels.jsonl"))[NEW_IP]
    assert (score.precision, score.recall) == (1.0, 1.0), score.as_dict(show_fp=5)
    per_day: dict[tuple[str, str], int] = {}
    for alert in alerts:
        if alert.type == NEW_IP:
            day = (f"{alert.tenant}/{alert.key_id}", alert.time.date().isoformat())
            per_day[day] = per_day.get(day, 0) + 1
    assert max(per_day.values()) <= 3
