"""The Grafana boards and their provisioning: linter rules, every query parses and uses real keywatch metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry

from keywatch.core import catalog
from keywatch.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
ALERT_TYPES = catalog.alert_types()  # every registered detector's types
# The key-hygiene rules: the platform's key rules checked from its request and audit logs.
HYGIENE_TYPES = (
    "apiKey.rotationOverdue",
    "apiKey.unused",
    "apiKey.rotationStalled",
    "apiKey.revokedWhileInUse",
    "apiKey.environmentMismatch",
    "apiKey.sharedAcrossServices",
    "apiKey.usedFromBrowser",
    "apiKey.privilegeEscalated",
    "apiKey.keyManagementAttempt",
    "apiKey.managedOutsidePortal",
    "apiKey.lifecycleBurst",
)
# A duration no board uses: after substitution every rate()/increase() must carry exactly this range.
RATE_INTERVAL_SENTINEL = "1111s"
# $__range likewise, allowed only in instant queries (a stat or bar of the whole time range)
RANGE_SENTINEL = "2222s"
# every selector is scoped to the chosen deployment(s): two keywatch jobs on one Prometheus never mix on a board
SCOPE = {"job": "$job", "instance": "$instance"}
RANGE_FUNCTIONS = {"rate", "irate", "increase"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load_dashboard(path: Path) -> dict[str, Any]:
    """One dashboard JSON document."""
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows excluded, panels inside collapsed rows included)."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def dashboard_queries(
    rate_interval: str = RATE_INTERVAL_SENTINEL, range_: str = RANGE_SENTINEL
) -> list[tuple[str, str, str]]:
    """(board uid, panel title, PromQL) of every target of every board, range variables replaced (an instant
    query's panel title is marked with a trailing " [instant]")."""
    found = []
    for path in DASHBOARDS:
        board = load_dashboard(path)
        for panel in panels(board):
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", rate_interval).replace("$__range", range_)
                title = panel["title"] + (" [instant]" if target.get("instant") else "")
                found.append((board["uid"], title, expr))
    return found


def exposition_names() -> set[str]:
    """Every sample name keywatch's worker exposes, from a fresh registry with each labelled metric exercised."""
    metrics = Metrics(CollectorRegistry(), process=True, tenant_labels=5)
    now = datetime.now(UTC)
    metrics.records.labels("api.requests", "accepted").inc()
    metrics.dead_letters.labels("ip").inc()
    metrics.observe_alert("apiKey.created", "low", "firing", now - timedelta(seconds=1), tenant="acme")
    metrics.processing.labels("ingest").observe(0.001)
    metrics.processed_records.labels("ingest").inc()
    metrics.observe_event_time("api.requests", now)
    metrics.rebalances.inc()
    metrics.consumer_lag.labels("keywatch-ingest", "api.requests").set(0)
    metrics.partition_stalled.labels("keywatch-ingest", "api.requests", "0").set(0)
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def _walk(node: Any, inside_range_fn: bool = False) -> Iterator[tuple[Any, bool]]:
    """Every AST node with whether it sits inside rate/irate/increase."""
    yield node, inside_range_fn
    if isinstance(node, promql_parser.Call):
        inner = inside_range_fn or node.func.name in RANGE_FUNCTIONS
        for arg in node.args:
            yield from _walk(arg, inner)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from _walk(node.expr, inside_range_fn)
        if node.param is not None:
            yield from _walk(node.param, inside_range_fn)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from _walk(node.lhs, inside_range_fn)
        yield from _walk(node.rhs, inside_range_fn)
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
        yield from _walk(node.expr, inside_range_fn)
    elif isinstance(node, promql_parser.MatrixSelector):
        yield from _walk(node.vector_selector, inside_range_fn)


def selectors(expr: str) -> list[tuple[str, bool]]:
    """(metric name, inside rate/increase) of every vector selector in a query."""
    return [
        (node.name or "", inside)  # "" (a selector by __name__ matcher) is never an exposed name
        for node, inside in _walk(promql_parser.parse(expr))
        if isinstance(node, promql_parser.VectorSelector)
    ]


QUERIES = dashboard_queries()
QUERY_IDS = [f"{uid}:{title}:{i}" for i, (uid, title, _) in enumerate(QUERIES)]


def test_both_boards_exist() -> None:
    """There is an operations board and a security board, with distinct uids and titles."""
    uids = {load_dashboard(path)["uid"] for path in DASHBOARDS}
    assert uids == {"keywatch-operations", "keywatch-security"}
    assert len({load_dashboard(path)["title"] for path in DASHBOARDS}) == len(DASHBOARDS)


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_datasource_variable_used_by_every_panel(path: Path) -> None:
    """A `datasource` template variable of type prometheus exists and every panel and target uses it."""
    board = load_dashboard(path)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no queries"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_job_and_instance_variables_reload_on_time_range_change(path: Path) -> None:
    """The linter's template rules: `job` and `instance` query variables on $datasource, multi-value with All,
    refreshed when the time range changes; `instance` is narrowed by `job`."""
    board = load_dashboard(path)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    for name in SCOPE:
        var = variables[name]
        assert var["type"] == "query", name
        assert var["datasource"] == DATASOURCE, name
        assert var["refresh"] == 2, f"{name}: refresh must be 2 (on time range change)"
        assert var["multi"] is True, name
        assert var["includeAll"] is True, name
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert re.fullmatch(rf"label_values\((keywatch_build_info)(\{{.*\}})?, {name}\)", query), query
    assert 'job=~"$job"' in variables["instance"]["query"]["query"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            assert var["refresh"] == 2, var["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_stat_and_bar_panels_of_the_whole_range_use_instant_range_queries(path: Path) -> None:
    """A stat or bar gauge that adds up alerts shows the dashboard's range: an instant increase over $__range,
    not the last $__rate_interval."""
    board = load_dashboard(path)
    for panel in panels(board):
        if panel["type"] not in {"stat", "bargauge"}:
            continue
        for target in panel["targets"]:
            if "increase(" in target["expr"]:
                assert "[$__range]" in target["expr"], panel["title"]
                assert target.get("instant") is True, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_every_panel_has_title_description_and_unit(path: Path) -> None:
    """Panels carry a title, a description and a unit; ids are unique and panels fit the 24-column grid."""
    board = load_dashboard(path)
    ids = []
    for panel in board["panels"]:
        ids.append(panel["id"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    for panel in panels(board):
        assert panel.get("title", "").strip(), panel
        assert len(panel.get("description", "")) >= 20, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("uid", "title", "expr"), QUERIES, ids=QUERY_IDS)
def test_query_parses_and_follows_the_rules(uid: str, title: str, expr: str) -> None:
    """The query parses; every rate/increase uses $__rate_interval (an instant query may use $__range instead);
    *_total appears only inside rate/increase; every selector carries job=~"$job" and instance=~"$instance"."""
    unscoped = expr.replace('"$job"', '""').replace('"$instance"', '""')
    assert "$" not in unscoped, f"{uid}/{title}: a Grafana variable other than the known ones: {expr}"
    tree = promql_parser.parse(expr)
    allowed = {timedelta(seconds=int(RATE_INTERVAL_SENTINEL.rstrip("s")))}
    if title.endswith(" [instant]"):
        allowed.add(timedelta(seconds=int(RANGE_SENTINEL.rstrip("s"))))
    for node, _ in _walk(tree):
        if isinstance(node, promql_parser.Call) and node.func.name in RANGE_FUNCTIONS:
            (arg,) = node.args
            assert isinstance(arg, promql_parser.MatrixSelector), f"{uid}/{title}: {expr}"
            assert arg.range in allowed, f"{uid}/{title}: {node.func.name} without $__rate_interval: {expr}"
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: (str(m.op), m.value) for m in node.matchers.matchers}
            for label, variable in SCOPE.items():
                assert matchers.get(label) == (str(promql_parser.MatchOp.Re), variable), (
                    f'{uid}/{title}: {node.name} without {label}=~"{variable}": {expr}'
                )
    for name, inside in selectors(expr):
        if name.endswith("_total"):
            assert inside, f"{uid}/{title}: counter {name} outside rate/increase: {expr}"


@pytest.mark.parametrize(("uid", "title", "expr"), QUERIES, ids=QUERY_IDS)
def test_query_uses_only_exposed_metrics(uid: str, title: str, expr: str) -> None:
    """Every metric a query selects is in keywatch's own exposition (fresh registry, every metric exercised)."""
    exposed = exposition_names()
    for name, _ in selectors(expr):
        assert name in exposed, f"{uid}/{title}: {name} is not exposed by keywatch"


def test_security_board_covers_every_alert_type() -> None:
    """Each alert type appears on the security board, by name or through an unfiltered by-type panel."""
    board = load_dashboard(GRAFANA / "dashboards" / "keywatch-security.json")
    text = json.dumps(board)
    for alert_type in ALERT_TYPES:
        assert alert_type in text, alert_type
    titles = {p["title"] for p in panels(board)}
    assert {"Alerts by type", "Alerts by severity", "Severity breakdown"} <= titles


def test_security_board_has_a_key_hygiene_row() -> None:
    """A "Key hygiene" row whose panels show the keys by hygiene status (by status only: the gauge has no key or
    tenant label) and the alerts of every key-hygiene rule."""
    from keywatch.core import hygiene

    board = load_dashboard(GRAFANA / "dashboards" / "keywatch-security.json")
    rows = [i for i, p in enumerate(board["panels"]) if p["type"] == "row"]
    [start] = [i for i in rows if board["panels"][i]["title"] == "Key hygiene"]
    end = min([i for i in rows if i > start], default=len(board["panels"]))
    row = [*board["panels"][start].get("panels", []), *board["panels"][start + 1 : end]]
    exprs = [t["expr"] for p in row for t in p.get("targets", [])]
    gauges = [e for e in exprs if "keywatch_keys_by_hygiene_status" in e]
    assert gauges
    assert all("sum by (status)" in e for e in gauges), gauges
    missing = [t for t in HYGIENE_TYPES if not any(f'"{t}' in e or f"|{t}" in e for e in exprs)]
    assert missing == []
    # the gauge itself: one series per status, no other label even with per-tenant labels switched on
    metrics = Metrics(CollectorRegistry(), tenant_labels=5)
    samples = [s for f in metrics.registry.collect() if f.name == "keywatch_keys_by_hygiene_status" for s in f.samples]
    assert [s.labels for s in samples] == [{"status": status} for status in hygiene.STATUSES]
    assert hygiene.STATUSES == ("overdue", "unused", "rotation_in_progress", "stalled")


def test_queries_pass_promtool_as_recording_rules(tmp_path: Path) -> None:
    """Prometheus' own parser accepts every query (wrapped as recording rules, `promtool check rules`)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package `prometheus` (scripts/setup-env does)"
    rules = [
        {"record": f"keywatch:dashboard_query:{i}", "expr": expr}
        for i, (_, _, expr) in enumerate(dashboard_queries("5m", "1h"))
    ]
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_provisioning() -> None:
    """The datasource and dashboard provider files are valid Grafana provisioning documents."""
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert re.match(r"^https?://", source["url"])
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "keywatch.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
