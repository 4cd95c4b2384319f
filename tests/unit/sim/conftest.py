"""Factories for the simulator's tests: small generated scenarios (cached per config), alerts and labels."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from keywatch.contract.alerts import Alert
from keywatch.sim.generator import write_outputs
from keywatch.sim.scenario import ScenarioConfig, build_plan

T0 = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
SMALL = {"days": 1.0, "tenants": 5, "keys": 40, "seed": 11}

ScenarioFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def scenario_factory(tmp_path_factory: pytest.TempPathFactory) -> ScenarioFactory:
    """Generate a small scenario (overrides on ScenarioConfig) into a fresh directory; cached per config."""
    cache: dict[tuple[tuple[str, Any], ...], Path] = {}

    def make(*, fresh: bool = False, **overrides: Any) -> Path:
        options = {**SMALL, **overrides}
        key = tuple(sorted(options.items()))
        if fresh or key not in cache:
            out = tmp_path_factory.mktemp("scenario")
            write_outputs(build_plan(ScenarioConfig(**options)), out)
            if fresh:
                return out
            cache[key] = out
        return cache[key]

    return make


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, parsed."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


@pytest.fixture
def label_factory() -> Callable[..., dict[str, Any]]:
    """A label dict; start/end as offsets in seconds from T0 (`start_s`, `end_s`), anything else overridable."""

    def make(start_s: float = 0, end_s: float = 60, **overrides: Any) -> dict[str, Any]:
        label = {
            "id": "inc-1",
            "type": "apiKey.requestSpike",
            "tenant": "acme",
            "key_id": "ak_live_1",
            "start": (T0 + timedelta(seconds=start_s)).isoformat().replace("+00:00", "Z"),
            "end": (T0 + timedelta(seconds=end_s)).isoformat().replace("+00:00", "Z"),
            "description": "test",
        }
        label.update(overrides)
        return label

    return make


@pytest.fixture
def alert_factory() -> Callable[..., dict[str, Any]]:
    """An alert as the Alert model serialises it; `at_s` is seconds from T0, `status` firing or resolved."""
    counter = iter(range(1_000_000))

    def make(
        at_s: float = 0,
        type: str = "apiKey.requestSpike",
        tenant: str = "acme",
        key_id: str = "ak_live_1",
        status: str = "firing",
    ) -> dict[str, Any]:
        alert = Alert.build(
            type=type,
            id_parts=(str(next(counter)),),
            source="/test",
            time=T0 + timedelta(seconds=at_s),
            tenant=tenant,
            key_id=key_id,
            env="live",
            severity="high",
            summary=f"{type} on {key_id}",
            evidence={},
            status="resolved" if status == "resolved" else "firing",
        )
        return orjson.loads(alert.model_dump_json())

    return make


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[str, list[dict[str, Any]]], Path]:
    """Write dicts as a JSONL file in tmp_path; returns its path."""

    def write(name: str, rows: list[dict[str, Any]]) -> Path:
        path = tmp_path / name
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        return path

    return write
