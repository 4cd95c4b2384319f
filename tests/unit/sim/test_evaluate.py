"""Scoring alerts against labels: precision, recall, time to detect, tolerance edges, what is ignored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keywatch.cli.evaluate import command
from keywatch.sim.evaluate import evaluate, read_alerts
from keywatch.sim.labels import read_labels

Factory = Callable[..., dict[str, Any]]
Writer = Callable[[str, list[dict[str, Any]]], Path]
SPIKE = "apiKey.requestSpike"
NEW_IP = "apiKey.usedFromNewIp"


def _score(write_jsonl: Writer, alerts: list[dict[str, Any]], labels: list[dict[str, Any]], tolerance: float = 300):
    scores = evaluate(
        read_alerts(write_jsonl("alerts.jsonl", alerts)), read_labels(write_jsonl("labels.jsonl", labels)), tolerance
    )
    return scores


def test_precision_counts_alerts_and_recall_counts_labels(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """Two alerts on one label and one stray alert: precision 2/3, recall 1/2."""
    labels = [
        label_factory(id="a", start_s=0, end_s=600),
        label_factory(id="b", key_id="ak_live_2", start_s=0, end_s=600),
    ]
    alerts = [alert_factory(at_s=30), alert_factory(at_s=90), alert_factory(at_s=30, key_id="ak_live_9")]
    score = _score(write_jsonl, alerts, labels)[SPIKE]
    assert (score.labels, score.alerts, score.true_positives, score.detected) == (2, 3, 2, 1)
    assert score.precision == pytest.approx(2 / 3)
    assert score.recall == pytest.approx(0.5)
    assert [label.id for label in score.missed] == ["b"]
    assert [a.key_id for a in score.false_positives] == ["ak_live_9"]


def test_time_to_detect_is_the_first_match_and_reported_as_a_median(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """TTD per label is first matching alert minus label start; the median is over labels."""
    labels = [
        label_factory(id="a", key_id="k1", start_s=0, end_s=600),
        label_factory(id="b", key_id="k2", start_s=0, end_s=600),
        label_factory(id="c", key_id="k3", start_s=0, end_s=600),
    ]
    alerts = [
        alert_factory(at_s=200, key_id="k1"),
        alert_factory(at_s=20, key_id="k1"),
        alert_factory(at_s=60, key_id="k2"),
        alert_factory(at_s=100, key_id="k3"),
    ]
    score = _score(write_jsonl, alerts, labels)[SPIKE]
    assert sorted(score.ttd_seconds) == [20, 60, 100]
    assert score.median_ttd == 60


@pytest.mark.parametrize(
    ("at_s", "matches"),
    [(-300, True), (-300.001, False), (1000 + 300, True), (1000 + 300.001, False), (500, True)],
)
def test_tolerance_edges_are_inclusive(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory, at_s: float, matches: bool
) -> None:
    """An alert exactly `tolerance` before the start or after the end still matches; a millisecond more does not."""
    score = _score(write_jsonl, [alert_factory(at_s=at_s)], [label_factory(start_s=0, end_s=1000)])[SPIKE]
    assert score.true_positives == int(matches)
    assert score.detected == int(matches)


def test_an_alert_must_match_type_tenant_and_key(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """Same time but another type, tenant or key is a false positive, and the label stays missed."""
    alerts = [alert_factory(type=NEW_IP), alert_factory(tenant="globex"), alert_factory(key_id="ak_live_2")]
    scores = _score(write_jsonl, alerts, [label_factory()])
    assert scores[SPIKE].detected == 0
    assert scores[SPIKE].alerts == 2
    assert scores[NEW_IP].alerts == 1
    assert scores[NEW_IP].precision == 0


def test_resolved_and_lifecycle_alerts_are_ignored(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """Episode ends (status resolved) and lifecycle alert types are not scored at all."""
    alerts = [alert_factory(at_s=5000, status="resolved"), alert_factory(type="apiKey.created"), alert_factory(at_s=10)]
    scores = _score(write_jsonl, alerts, [label_factory()])
    assert scores[SPIKE].alerts == 1
    assert scores[SPIKE].precision == 1
    assert "apiKey.created" not in scores


def test_no_alerts_and_no_labels_leave_the_scores_undefined(write_jsonl: Writer) -> None:
    """With nothing to measure, precision, recall and TTD are None, not zero."""
    score = _score(write_jsonl, [], [])[SPIKE]
    assert (score.precision, score.recall, score.median_ttd) == (None, None, None)


def test_cli_prints_a_table_and_lists_false_positives_and_misses(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """The table names every scored type; false positives and missed labels are listed."""
    alerts = write_jsonl("alerts.jsonl", [alert_factory(key_id="ak_live_9")])
    labels = write_jsonl("labels.jsonl", [label_factory(id="inc-spike-001")])
    result = CliRunner().invoke(command, ["--alerts", str(alerts), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert "apiKey.usedAfterRevoke" in result.output
    assert "false positives (1" in result.output
    assert "inc-spike-001" in result.output


def test_cli_json_output_is_machine_readable(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """--json prints one JSON document with per-type numbers."""
    alerts = write_jsonl("alerts.jsonl", [alert_factory(at_s=45)])
    labels = write_jsonl("labels.jsonl", [label_factory()])
    result = CliRunner().invoke(command, ["--alerts", str(alerts), "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    by_type = {t["type"]: t for t in orjson.loads(result.stdout)["types"]}
    assert by_type[SPIKE]["precision"] == 1.0
    assert by_type[SPIKE]["median_ttd_seconds"] == 45


def test_cli_fails_below_the_floor_naming_the_type(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """--min-precision not met exits 1 with a message naming the failing type."""
    alerts = write_jsonl("alerts.jsonl", [alert_factory(), alert_factory(key_id="other")])
    labels = write_jsonl("labels.jsonl", [label_factory()])
    args = ["--alerts", str(alerts), "--labels", str(labels)]
    assert CliRunner().invoke(command, [*args, "--min-precision", "0.5", "--min-recall", "1"]).exit_code == 0
    result = CliRunner().invoke(command, [*args, "--min-precision", "0.95"])
    assert result.exit_code == 1
    assert "apiKey.requestSpike: precision 0.500" in result.output


def test_cli_rejects_a_malformed_alerts_file(write_jsonl: Writer, label_factory: Factory, tmp_path: Path) -> None:
    """A line that is not JSON is reported with its file and line number."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "apiKey.requestSpike"}\nnot json\n')
    labels = write_jsonl("labels.jsonl", [label_factory()])
    result = CliRunner().invoke(command, ["--alerts", str(bad), "--labels", str(labels)])
    assert result.exit_code != 0
    assert "bad.jsonl:1" in result.output


def _evaluate_cli(alerts: Path, labels: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(command, ["--alerts", str(alerts), "--labels", str(labels), *extra])
    return result.exit_code, result.output


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in output
    assert "validation error" not in output
    return lines[0]


def test_cli_names_a_lifecycle_file_given_as_alerts(
    scenario_factory: Callable[..., Path], label_factory: Factory, write_jsonl: Writer
) -> None:
    """lifecycle.jsonl as --alerts: exit 1, one line naming the option, the file and what it holds."""
    sim = scenario_factory()
    labels = write_jsonl("labels.jsonl", [label_factory()])
    code, output = _evaluate_cli(sim / "lifecycle.jsonl", labels)
    assert code == 1
    line = _one_error_line(output)
    assert "--alerts" in line
    assert "lifecycle.jsonl:1: looks like key lifecycle events" in line
    code, output = _evaluate_cli(sim / "requests.jsonl", labels)
    assert "looks like request log records" in _one_error_line(output)


def test_cli_names_swapped_alerts_and_labels(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """Labels given as --alerts and alerts as --labels: the first is named, in one line."""
    alerts = write_jsonl("alerts.jsonl", [alert_factory()])
    labels = write_jsonl("labels.jsonl", [label_factory()])
    code, output = _evaluate_cli(labels, alerts)
    assert code == 1
    assert "--alerts" in (line := _one_error_line(output))
    assert "looks like labels from `keywatch simulate`" in line
    code, output = _evaluate_cli(alerts, alerts)
    assert code == 1
    assert "--labels" in (line := _one_error_line(output))
    assert "looks like alerts" in line


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"", "the file is empty"), (b"\n  \n", "the file is empty"), (b"\xff\xfe not json\n", "not JSON lines")],
)
def test_cli_names_an_empty_or_non_json_file(
    tmp_path: Path, write_jsonl: Writer, label_factory: Factory, content: bytes, says: str
) -> None:
    """An empty or non-JSON --alerts file: exit 1 and one line saying so."""
    bad = tmp_path / "given.jsonl"
    bad.write_bytes(content)
    code, output = _evaluate_cli(bad, write_jsonl("labels.jsonl", [label_factory()]))
    assert code == 1
    assert says in _one_error_line(output)


def test_a_bad_label_later_in_the_file_is_one_line(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """A label line that fails validation is reported with file and line, without pydantic's dump."""
    alerts = write_jsonl("alerts.jsonl", [alert_factory()])
    labels = write_jsonl("labels.jsonl", [label_factory(), label_factory(start="yesterday")])
    code, output = _evaluate_cli(alerts, labels)
    assert code == 1
    assert "labels.jsonl:2: not a label: field `start`" in _one_error_line(output)


def test_noisy_key_days_count_groups_over_three_not_explained_by_a_label(
    write_jsonl: Writer, alert_factory: Factory, label_factory: Factory
) -> None:
    """4 alerts of one type on a key in a day count once; 3 do not; a label overlapping that day explains them."""
    alerts = [alert_factory(at_s=60 * i, key_id="noisy") for i in range(4)]
    alerts += [alert_factory(at_s=60 * i, key_id="quiet") for i in range(3)]
    alerts += [alert_factory(at_s=60 * i, key_id="explained") for i in range(5)]
    alerts += [alert_factory(at_s=60 * i, key_id="explained", type=NEW_IP) for i in range(4)]
    labels = [label_factory(key_id="explained", start_s=3600, end_s=7200)]
    code, output = _evaluate_cli(write_jsonl("alerts.jsonl", alerts), write_jsonl("labels.jsonl", labels), "--json")
    assert code == 0, output
    noisy = orjson.loads(output)["noisy_key_days"]
    assert noisy["count"] == 2
    assert {(g["subject"], g["type"], g["alerts"]) for g in noisy["groups"]} == {
        ("acme/noisy", SPIKE, 4),
        ("acme/explained", NEW_IP, 4),
    }
    code, output = _evaluate_cli(write_jsonl("alerts.jsonl", alerts), write_jsonl("labels.jsonl", labels))
    assert "not explained by a label: 2" in output


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400), after_a_good_line=st.booleans(), as_labels=st.booleans())
def test_any_bytes_in_either_file_give_scores_or_one_line(
    tmp_path: Path,
    alert_factory: Factory,
    label_factory: Factory,
    blob: bytes,
    after_a_good_line: bool,
    as_labels: bool,
) -> None:
    """Arbitrary bytes as --alerts or --labels (alone or after a valid line): exit 0, or exit 1 with one line."""
    good_alert = orjson.dumps(alert_factory()) + b"\n"
    good_label = orjson.dumps(label_factory()) + b"\n"
    hostile = (good_label if as_labels else good_alert) if after_a_good_line else b""
    alerts, labels = tmp_path / "alerts.jsonl", tmp_path / "labels.jsonl"
    alerts.write_bytes(good_alert if as_labels else hostile + blob)
    labels.write_bytes(hostile + blob if as_labels else good_label)
    result = CliRunner().invoke(command, ["--alerts", str(alerts), "--labels", str(labels)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1)
    if result.exit_code == 1:
        _one_error_line(result.output)
