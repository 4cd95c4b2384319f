"""Detection quality does not regress: a labelled simulated scenario, replayed, scores >= 0.95 per type; and the
alerts of two simulated scenarios stay exactly the golden ones (ids included) until a change means to move them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from cloudevents.v1.http import from_json as cloudevents_from_json

from keywatch.cli.main import cli
from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.events import TIME_PATTERN
from keywatch.core import catalog, registry
from keywatch.replay import replay
from keywatch.runtime import make_engine
from keywatch.sim.evaluate import evaluate, read_alerts
from keywatch.sim.labels import read_labels
from tests.schema_check import cloudevents_validator, errors, keywatch_validator

# Smaller than the README's default scenario (seed 7, 3.8 M requests) so CI spends about a minute on it.
SCENARIO = ["--seed", "5", "--tenants", "12", "--keys", "120", "--scale", "0.4", "--incidents-per-type", "8"]
# A second world for the golden ids: another seed, size and length.
OTHER = ["--seed", "8", "--tenants", "6", "--keys", "50", "--scale", "0.3", "--days", "3", "--incidents-per-type", "4"]
# Every detector's alert types but the key registry's (lifecycle alerts report what the portal did: not scored).
SCORED = tuple(alert.type for spec in catalog.specs() if spec.name != registry.NAME for alert in spec.alerts)
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _simulate_and_replay(out_dir: Path, options: list[str]) -> Path:
    result = CliRunner().invoke(cli, ["simulate", "--out-dir", str(out_dir), *options])
    assert result.exit_code == 0, result.output
    alerts_file = out_dir / "alerts.jsonl"
    with (
        (out_dir / "requests.jsonl").open("rb") as requests,
        (out_dir / "lifecycle.jsonl").open("rb") as life,
        alerts_file.open("w") as out,
    ):
        replay(requests, life, make_engine(Settings()), lambda a: out.write(a.model_dump_json() + "\n"))
    return out_dir


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scored scenario, simulated and replayed once for the tests of this module."""
    return _simulate_and_replay(tmp_path_factory.mktemp("quality"), SCENARIO)


def test_precision_recall_and_time_to_detect(scenario: Path) -> None:
    """Each alert type has precision and recall >= 0.95 and a median time-to-detect under 2 minutes."""
    scores = evaluate(read_alerts(scenario / "alerts.jsonl"), read_labels(scenario / "labels.jsonl"))
    for alert_type in SCORED:
        score = scores[alert_type]
        assert score.labels >= 8, alert_type
        assert score.precision is not None
        assert score.precision >= 0.95, score.as_dict(show_fp=5)
        assert score.recall is not None
        assert score.recall >= 0.95, score.as_dict(show_fp=5)
        assert score.median_ttd is not None
        assert score.median_ttd < 120, score.as_dict(show_fp=0)


def test_every_emitted_alert_is_a_valid_cloudevent(scenario: Path) -> None:
    """Every alert of the scenario validates against schemas/alert.schema.json and the CloudEvents 1.0 schema
    (formats checked), and the official CloudEvents SDK reads it back with the same attributes."""
    lines = [line for line in (scenario / "alerts.jsonl").read_bytes().splitlines() if line]
    assert lines
    ours, official = keywatch_validator("alert"), cloudevents_validator()
    for line in lines:
        document = orjson.loads(line)
        assert errors(ours, document) == [], line
        assert errors(official, document) == [], line
        event = cloudevents_from_json(line)
        assert (event["id"], event["type"], event["source"], event["subject"]) == (
            document["id"],
            document["type"],
            document["source"],
            document["subject"],
        )
        assert event.data == document["data"]
        for where, value in _leaves(document["data"]["evidence"]):
            assert not where.endswith("_ms"), f"{document['type']}: {where} is epoch milliseconds"
            if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", value):
                assert re.fullmatch(TIME_PATTERN, value), f"{document['type']}: {where} = {value!r}"


def _leaves(node: object, where: str = "") -> list[tuple[str, object]]:
    """Every (path, value) of a JSON document's leaves."""
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{where}.{key}")]
    if isinstance(node, list):
        return [leaf for i, value in enumerate(node) for leaf in _leaves(value, f"{where}[{i}]")]
    return [(where, node)]


def _golden_lines(alerts_file: Path) -> list[str]:
    """Every alert of the file (lifecycle and resolved ones too), one sorted line each."""
    alerts = [Alert.model_validate_json(line) for line in alerts_file.read_bytes().splitlines() if line]
    return sorted(f"{a.id} {a.type} {a.subject} {a.data.status} {a.time.isoformat()}" for a in alerts)


def _check_golden(name: str, alerts_file: Path) -> None:
    path = GOLDEN / f"{name}.txt"
    got = _golden_lines(alerts_file)
    if os.environ.get("KEYWATCH_UPDATE_GOLDEN") == "1":  # a change that means to move alerts: rewrite, then review
        path.write_text("".join(line + "\n" for line in got))
    want = path.read_text().splitlines()
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing, f"{len(missing)} golden alerts no longer emitted, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} alerts not in {path.name}, e.g. {extra[:5]}"
    assert got == want


def test_alerts_of_the_scored_scenario_are_the_golden_ones(scenario: Path) -> None:
    """Replaying the scored scenario emits exactly the alerts of tests/golden/alerts-seed5.txt: same ids, types,
    subjects and times (KEYWATCH_UPDATE_GOLDEN=1 rewrites the file when a change means to move them)."""
    _check_golden("alerts-seed5", scenario / "alerts.jsonl")


def test_alerts_of_another_scenario_are_the_golden_ones(tmp_path: Path) -> None:
    """The same for another seed, size and length (tests/golden/alerts-seed8.txt)."""
    _check_golden("alerts-seed8", _simulate_and_replay(tmp_path, OTHER) / "alerts.jsonl")
