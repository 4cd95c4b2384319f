"""A detector added by writing only its module (tests/toy_detectors/teapot.py) and registering its spec:
configured from TOML, run by replay and by the worker's detect path with the same alerts, ticks and a tenant
alert included, suppressed by the engine, and checked against its docs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from coretest import MINUTE, T0, docs_problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.toy_detectors import teapot

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.contract.events import RequestRecord
from keywatch.core import catalog
from keywatch.core.config import load_detection_config
from keywatch.core.engine import Engine, Outcome
from keywatch.core.state import KeyState
from keywatch.metrics import Metrics
from keywatch.pipeline.ingest import Topics
from keywatch.pipeline.processor import Processor
from keywatch.replay import replay
from keywatch.runtime import make_engine
from keywatch.sinks.base import MemorySink

TOML = """
[detection]
allowed_lateness_seconds = 30

[detection.teapot]
close_after_seconds = 60
suppress_seconds = 300

[detection.teapot_tenant]
min_keys = 2
"""


@pytest.fixture
def registered(tmp_path: Path) -> Iterator[Path]:
    """The toy detectors registered for one test, and a config file that sets them."""
    catalog.register(teapot.SPEC)
    catalog.register(teapot.TENANT_SPEC)
    path = tmp_path / "keywatch.toml"
    path.write_text(TOML, encoding="utf-8")
    try:
        yield path
    finally:
        catalog.unregister(teapot.TENANT_SPEC.name)
        catalog.unregister(teapot.SPEC.name)


def _line(ts: int, key_id: str, status: int) -> bytes:
    record = {"ts": ts, "tenant": "acme", "key_id": key_id, "env": "live", "ip": "192.0.2.10", "method": "GET"}
    return orjson.dumps({**record, "path": "/v1/tea", "status": status})


LINES = [
    _line(T0, "key-1", 418),
    _line(T0 + 1_000, "key-1", 402),
    _line(T0 + 2_000, "key-1", 402),  # suppressed
    _line(T0 + 3_000, "key-1", 401),
    _line(T0 + 4_000, "key-2", 401),  # the second failing key of acme: a tenant alert
    _line(T0 + 2 * MINUTE, "key-3", 200),  # moves the watermark past the teapot's tick (T0 + 60 s)
]


def _replayed(engine: Engine) -> list[Alert]:
    alerts: list[Alert] = []
    replay(LINES, [], engine, alerts.append)
    return alerts


def _worker(engine: Engine, metrics: Metrics | None = None) -> list[Alert]:
    """The worker's detect path: packed messages on one partition, forwards delivered as keyed messages."""
    sink = MemorySink()
    store: dict[bytes, bytes] = {}
    processor = Processor(engine, sink, Topics("requests", "lifecycle"), metrics=metrics)

    async def run() -> None:
        out = processor.pack_batch([("requests", 0, i, None, line) for i, line in enumerate(LINES)], lambda s: 0)
        for value in out.keyed[0]:
            await processor.detect_message(None, value, store, 0)
        delivered = 0
        while delivered < len(sink.messages["keyed"]):
            key, value = sink.messages["keyed"][delivered]
            delivered += 1
            await processor.detect_message(key, value, store, 0)

    asyncio.run(run())
    return [Alert.model_validate_json(value) for _, value in sink.messages["alerts"]]


def test_toy_detector_is_configured_from_toml(registered: Path) -> None:
    """Its [detection.<name>] sections load into its own settings models, defaults for the rest."""
    config = load_detection_config(registered)
    assert config.settings(teapot.SPEC) == teapot.TeapotConfig(close_after_seconds=60, suppress_seconds=300)
    assert config.settings(teapot.TENANT_SPEC).min_keys == 2
    assert config.allowed_lateness_seconds == 30


def test_toy_detector_runs_in_replay_with_ticks_suppression_and_a_tenant_alert(registered: Path) -> None:
    """Replay runs both hooks: the 418 episode closes at its tick's time, the second 402 is suppressed, two
    failing keys make one alert about the tenant."""
    alerts = _replayed(make_engine(Settings(), registered))
    toy = [a for a in alerts if a.type in (teapot.TEAPOT, teapot.PAYMENT, teapot.MANY_KEYS)]
    assert [(a.type, a.data.status, a.subject) for a in toy] == [
        (teapot.TEAPOT, "firing", "acme/key-1"),
        (teapot.PAYMENT, "firing", "acme/key-1"),
        (teapot.MANY_KEYS, "firing", "acme"),
        (teapot.TEAPOT, "resolved", "acme/key-1"),
    ]
    fired, resolved = toy[0], toy[3]
    assert fired.data.episode_id == resolved.data.episode_id is not None
    assert resolved.time == Alert.model_validate({**resolved.model_dump(), "time": T0 + MINUTE}).time
    tenant = toy[2]
    assert (tenant.is_tenant_alert, tenant.data.key_id, tenant.data.env, tenant.severity) == (True, None, None, "high")
    assert tenant.data.evidence == {"keys": ["key-1", "key-2"]}


def test_worker_detect_path_gives_replays_alerts(registered: Path) -> None:
    """The worker's detect path (per-partition watermark, tick index, forwards to the tenant's state) emits the
    same alerts with the same ids as replay."""
    engine = make_engine(Settings(), registered)
    by_replay = sorted(a.model_dump_json() for a in _replayed(engine))
    by_worker = sorted(a.model_dump_json() for a in _worker(make_engine(Settings(), registered)))
    assert by_worker == by_replay
    assert any(teapot.MANY_KEYS in line for line in by_worker)


def test_the_worker_counts_alerts_under_the_detectors_names(registered: Path) -> None:
    """keywatch_detector_alerts_total is labelled with each spec's `name` (its [detection.<name>] section): the
    teapot's three alerts and the tenant detector's one, and no series for a name no alert came from."""
    metrics = Metrics()
    alerts = _worker(make_engine(Settings(), registered), metrics)

    def count(detector: str) -> float | None:
        return metrics.registry.get_sample_value("keywatch_detector_alerts_total", {"detector": detector})

    assert (count(teapot.SPEC.name), count(teapot.TENANT_SPEC.name)) == (3.0, 1.0)
    assert sum(count(spec.name) or 0.0 for spec in catalog.specs()) == len(alerts)
    assert count("_other") is None


def test_a_due_tick_runs_before_a_later_record_of_the_key(registered: Path) -> None:
    """Without any watermark (one key, nothing else), the key's next record past the tick time first runs it."""
    engine = make_engine(Settings(), registered)
    first = engine.on_request(None, RequestRecord.model_validate_json(LINES[0]))
    later = RequestRecord.model_validate_json(_line(T0 + 10 * MINUTE, "key-1", 200))
    outcome = engine.on_request(first.state, later)
    [resolved] = outcome.alerts
    assert (resolved.data.status, resolved.data.evidence) == ("resolved", {"closed_at": T0 + MINUTE})
    assert outcome.state.ticks == {}


def test_toy_detector_docs_are_checked(registered: Path) -> None:
    """The docs check used for docs/alerts.md accepts the toy's page and rejects it without a section."""
    for spec in (teapot.SPEC, teapot.TENANT_SPEC):
        assert docs_problems(spec, teapot.DOCS) == []
    assert docs_problems(teapot.SPEC, teapot.DOCS.replace("## teapot", "## kettle")) != []


def _reference(engine: Engine, lines: list[bytes]) -> list[str]:
    """Step by step: after every record, every key's state is offered its due ticks (no index, no heap)."""
    states: dict[str, KeyState] = {}
    alerts: list[str] = []
    newest = None

    def apply(subject: str, outcome: Outcome) -> None:
        states[subject] = outcome.state
        alerts.extend(a.model_dump_json() for a in outcome.alerts)
        for forward in outcome.forwards:
            apply(forward.subject, engine.on_forward(states.get(forward.subject), forward))

    for line in lines:
        record = RequestRecord.model_validate_json(line)
        apply(record.subject, engine.on_request(states.get(record.subject), record))
        when = int(record.ts.timestamp() * 1000)
        newest = when if newest is None else max(newest, when)
        for subject in sorted(states):
            apply(subject, engine.on_tick(states[subject], engine.watermark(newest)))
    return alerts


traffic = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40_000),  # ms after the previous request
        st.sampled_from(["key-1", "key-2", "key-3"]),
        st.sampled_from([200, 401, 402, 418, 418]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(traffic)
def test_replay_runs_ticks_like_the_step_by_step_reference(registered: Path, steps: list[tuple[int, str, int]]) -> None:
    """For any in-order traffic, replay's tick heap gives exactly the alerts (ids, times, order-free) of offering
    every key its due ticks after every record."""
    now, lines = T0, []
    for gap, key_id, status in steps:
        now += gap
        lines.append(_line(now, key_id, status))
    engine = make_engine(Settings(), registered)
    got: list[Alert] = []
    replay(lines, [], engine, got.append)
    assert sorted(a.model_dump_json() for a in got) == sorted(_reference(make_engine(Settings(), registered), lines))


def test_engine_drops_a_second_open_and_a_close_without_an_episode(registered: Path) -> None:
    """One episode per (type, discriminator): a second 418 while open fires nothing, the tick's close resolves
    it once, and a close with nothing open is dropped."""
    engine = make_engine(Settings(), registered)
    first = engine.on_request(None, RequestRecord.model_validate_json(_line(T0, "key-1", 418)))
    second = engine.on_request(first.state, RequestRecord.model_validate_json(_line(T0 + 1_000, "key-1", 418)))
    assert (len(first.alerts), second.alerts) == (1, [])
    closed = engine.on_tick(second.state, T0 + 10 * MINUTE)
    assert [a.data.status for a in closed.alerts] == ["resolved"]
    closed.state.ask_tick(teapot.SPEC.name, T0 + 11 * MINUTE)
    assert engine.on_tick(closed.state, T0 + 12 * MINUTE).alerts == []


def test_a_tenants_state_is_seen_when_a_forward_reaches_it(registered: Path) -> None:
    """The tenant's state records the newest forward's time, so the key cap orders it by activity, not first."""
    engine = make_engine(Settings(), registered)
    outcome = engine.on_request(None, RequestRecord.model_validate_json(_line(T0 + 5_000, "key-1", 401)))
    [forward] = [f for f in outcome.forwards if f.kind == teapot.FAILED]
    tenant = engine.on_forward(None, forward).state
    assert (tenant.subject, tenant.is_tenant, tenant.registry.last_seen_ms) == ("acme/", True, T0 + 5_000)
