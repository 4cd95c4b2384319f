"""`keywatch simulate --disorder-seconds`: the same records and labels, delivered up to S seconds out of order."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from keywatch.cli.main import cli
from keywatch.contract.events import _parse_ts
from keywatch.sim.generator import displace, iter_events
from keywatch.sim.scenario import ScenarioConfig, build_plan

SCENARIO = ["--seed", "3", "--days", "1", "--tenants", "2", "--keys", "6", "--scale", "0.2", "--learning-days", "0.5"]


def _simulate(out: Path, *extra: str) -> Path:
    result = CliRunner().invoke(cli, ["simulate", "--out-dir", str(out), *SCENARIO, *extra])
    assert result.exit_code == 0, result.output
    return out


def _times(path: Path) -> list[float]:
    return [_parse_ts(orjson.loads(line)["ts"]).timestamp() for line in path.read_bytes().splitlines()]


def _worst_displacement(times: list[float]) -> float:
    """How far at most a record is behind the newest record before it."""
    newest, worst = float("-inf"), 0.0
    for ts in times:
        worst = max(worst, newest - ts)
        newest = max(newest, ts)
    return worst


@given(
    times=st.lists(st.integers(0, 10_000), max_size=200).map(sorted),
    max_ms=st.integers(0, 3_000),
    seed=st.integers(0, 1000),
)
def test_displace_is_a_permutation_within_the_bound(times: list[int], max_ms: int, seed: int) -> None:
    """`displace` keeps every item and puts none more than `max_ms` behind an item with a later time."""
    items = [(ts, i) for i, ts in enumerate(times)]
    out = list(displace(items, max_ms, random.Random(seed)))
    assert sorted(out) == sorted(items)
    assert _worst_displacement([float(ts) for ts, _ in out]) <= max_ms
    if max_ms == 0:
        assert out == items


def test_disorder_30_s_moves_records_by_at_most_30_s(tmp_path: Path) -> None:
    """With S=30: the same lines and labels as sorted, the requests out of order, by at most 30 s."""
    sorted_dir = _simulate(tmp_path / "sorted")
    loose = _simulate(tmp_path / "loose", "--disorder-seconds", "30")
    for name in ("requests.jsonl", "lifecycle.jsonl"):
        a, b = (sorted_dir / name).read_bytes(), (loose / name).read_bytes()
        assert sorted(a.splitlines()) == sorted(b.splitlines()), name
        assert _worst_displacement(_times(sorted_dir / name)) == 0, name
        assert _worst_displacement(_times(loose / name)) <= 30.0, name
    assert 20.0 < _worst_displacement(_times(loose / "requests.jsonl")) <= 30.0
    assert (sorted_dir / "labels.jsonl").read_bytes() == (loose / "labels.jsonl").read_bytes()
    again = _simulate(tmp_path / "again", "--disorder-seconds", "30")
    assert (again / "requests.jsonl").read_bytes() == (loose / "requests.jsonl").read_bytes(), "seeded"


def test_disorder_zero_is_the_default_output(tmp_path: Path) -> None:
    """`--disorder-seconds 0` writes exactly the files of the default (the golden tests pin the default)."""
    default = _simulate(tmp_path / "default")
    zero = _simulate(tmp_path / "zero", "--disorder-seconds", "0")
    for name in ("requests.jsonl", "lifecycle.jsonl", "labels.jsonl", "networks.json"):
        assert (default / name).read_bytes() == (zero / name).read_bytes(), name
    scenarios = [orjson.loads((d / "scenario.json").read_bytes()) for d in (default, zero)]
    for scenario in scenarios:
        del scenario["summary"]["seconds"]  # how long generating took
    assert scenarios[0] == scenarios[1]


def test_audit_refuses_disordered_files(tmp_path: Path) -> None:
    """--audit with --disorder-seconds is a usage error naming both options."""
    result = CliRunner().invoke(
        cli, ["simulate", "--out-dir", str(tmp_path), *SCENARIO, "--audit", "--disorder-seconds", "5"]
    )
    assert result.exit_code == 2
    assert "--disorder-seconds" in result.output


def test_the_kafka_feed_with_disorder_is_the_same_events_within_the_bound() -> None:
    """`iter_events(..., disorder_ms=30_000)` (what --kafka sends) holds the sorted feed's events, none 30 s late."""
    plan = build_plan(ScenarioConfig(seed=3, days=0.5, tenants=2, keys=4, scale=0.1, learning_days=0.25))
    ordered = list(iter_events(plan))
    loose = list(iter_events(plan, disorder_ms=30_000))
    assert sorted(loose) == sorted(ordered)
    assert loose != ordered
    assert 0 < _worst_displacement([ts / 1000 for ts, *_ in loose]) <= 30.0
