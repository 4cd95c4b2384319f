"""The key hygiene situations of issue #13 (browser use, key-management attempts, their look-alikes): headers in
the records, labels the audit confirms, and scores on a small default scenario."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from keywatch.config import Settings
from keywatch.contract.events import RequestRecord
from keywatch.core.config import default_detection_config
from keywatch.core.wiring import build_engine
from keywatch.replay import replay
from keywatch.sim.audit import audit
from keywatch.sim.evaluate import evaluate, read_alerts
from keywatch.sim.generator import request_rest, write_outputs
from keywatch.sim.labels import read_labels
from keywatch.sim.profiles import PROFILES
from keywatch.sim.scenario import FROM_BROWSER, KEY_MANAGEMENT, NEW_IP, ScenarioConfig, build_plan

SMALL = ScenarioConfig(seed=3, days=3.0, tenants=5, keys=40, scale=0.2, incidents_per_type=6)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small default scenario, written once."""
    out = tmp_path_factory.mktemp("browser-scenario")
    write_outputs(build_plan(SMALL, PROFILES["default"]), out)
    return out


def test_a_request_without_headers_is_written_as_before() -> None:
    """The tuple without headers gives the JSON of before; with them, they follow `request_id`, absent ones left
    out, and the line is the contract's JSON form."""
    plain = ("acme", "k1", "live", "192.0.2.1", "GET", "/v1/x", 200, 12.5, "sdk/1", "req_1")
    rest = request_rest(plain)
    assert rest.endswith('"user_agent":"sdk/1","request_id":"req_1"}')
    line = '{"ts":"2026-01-05T00:00:00.000Z' + request_rest((*plain, "https://a.example", None, None, "cors"))
    record = RequestRecord.model_validate_json(line)
    assert (record.origin, record.referer, record.sec_fetch_site, record.sec_fetch_mode) == (
        "https://a.example",
        None,
        None,
        "cors",
    )
    assert record.model_dump_json(exclude_none=True) == line


def test_labels_are_supported_and_nothing_unlabelled(scenario: Path) -> None:
    """The audit confirms every label (browser days, key-management attempts, the apps' new networks)."""
    report = audit(scenario, SMALL.learning_end_ms)
    assert report.unsupported == {}
    assert report.unlabelled == []
    types = {label.type for label in read_labels(scenario / "labels.jsonl")}
    assert {FROM_BROWSER, KEY_MANAGEMENT, NEW_IP} <= types


def test_browser_and_lookalike_records_are_there(scenario: Path) -> None:
    """Origins of apps and extensions, Sec-Fetch-only requests, bots and scanners saying Mozilla/5.0, look-alike
    paths."""
    origins, agents, paths, fetch_only = set(), set(), set(), 0
    with (scenario / "requests.jsonl").open("rb") as fh:
        for line in fh:
            rec = orjson.loads(line)
            if "origin" in rec:
                origins.add(rec["origin"].split("://", 1)[0])
            elif "sec_fetch_mode" in rec:
                fetch_only += 1
            agents.add(rec["user_agent"])
            paths.add(rec["path"])
    assert {"https", "chrome-extension"} <= origins <= {"https", "chrome-extension", "moz-extension"}
    assert fetch_only
    assert any("Googlebot" in a for a in agents)
    assert "Mozilla/5.0 (compatible)" in agents
    assert {"/v1/keyboards", "/v1/tokenization", "/v1/customers/keys-report"} <= paths


def test_small_default_scenario_scores(scenario: Path) -> None:
    """Replayed: the browser and key-management types at precision and recall 1.0, usedFromNewIp too."""
    engine = build_engine(default_detection_config(), Settings().alert_source)
    with (
        (scenario / "requests.jsonl").open("rb") as requests,
        (scenario / "lifecycle.jsonl").open("rb") as life,
        (scenario / "alerts.jsonl").open("w") as out,
    ):
        replay(requests, life, engine, lambda a: out.write(a.model_dump_json() + "\n"))
    scores = evaluate(read_alerts(scenario / "alerts.jsonl"), read_labels(scenario / "labels.jsonl"))
    for kind in (FROM_BROWSER, KEY_MANAGEMENT, NEW_IP):
        assert (scores[kind].precision, scores[kind].recall) == (1.0, 1.0), kind
