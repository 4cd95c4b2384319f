"""The Kafka feed (with an in-memory producer) and the simulate command's file mode."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from keywatch.cli.simulate import command
from keywatch.contract.events import LifecycleEvent, RequestRecord
from keywatch.sim.kafka import produce
from keywatch.sim.scenario import ScenarioConfig, build_plan


class MemoryProducer:
    """Stands in for AIOKafkaProducer: records what would have been sent."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def flush(self) -> None:
        return None

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[None]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _run(**options: Any) -> tuple[MemoryProducer, Any]:
    producers: list[MemoryProducer] = []

    def factory(**kw: Any) -> MemoryProducer:
        producers.append(MemoryProducer(**kw))
        return producers[-1]

    plan = build_plan(ScenarioConfig(days=0.5, tenants=2, keys=6, seed=3))
    result = asyncio.run(
        produce(
            plan,
            bootstrap="127.0.0.1:1",
            topic_requests="req",
            topic_lifecycle="life",
            producer_factory=factory,
            **options,
        )
    )
    return producers[0], result


def test_kafka_feed_interleaves_both_topics_in_event_time_order() -> None:
    """Lifecycle events and requests go out in one event-time order, keyed tenant/key_id, as contract JSON."""
    producer, result = _run()
    assert producer.started
    assert producer.stopped
    assert result.requests == sum(topic == "req" for topic, _, _ in producer.sent)
    assert result.lifecycle == sum(topic == "life" for topic, _, _ in producer.sent) > 0
    times = []
    for topic, key, value in producer.sent:
        model = RequestRecord if topic == "req" else LifecycleEvent
        record = model.model_validate_json(value)
        assert key == f"{record.tenant}/{record.key_id}".encode()
        times.append(record.ts)
    assert times == sorted(times)
    assert producer.sent[0][0] == "life"  # keys are created at t0, before their first request


def test_kafka_feed_stops_after_the_duration() -> None:
    """--duration 0 sends nothing and still shuts the producer down cleanly."""
    producer, result = _run(duration=0)
    assert producer.sent == []
    assert producer.stopped
    assert result.requests == 0


def test_realtime_feed_is_re_timed_to_the_wall_clock() -> None:
    """With realtime, the history is sent at once with past times, ending near now."""
    producer, result = _run(realtime=True, duration=2.0)
    assert result.requests > 0
    last = RequestRecord.model_validate_json([v for t, _, v in producer.sent if t == "req"][-1])
    assert time.time() - 6 * 3600 < last.ts.timestamp() <= time.time() + 1


def test_simulate_writes_the_scenario_files(tmp_path: Path) -> None:
    """`keywatch simulate --out-dir` writes requests, lifecycle and labels, and reports on stderr."""
    out = tmp_path / "scenario"
    args = ["--out-dir", str(out), "--days", "1", "--keys", "20", "--tenants", "3", "--seed", "5", "--audit"]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert "labels supported by the data" in result.output
    labels = [orjson.loads(line) for line in (out / "labels.jsonl").read_bytes().splitlines()]
    assert labels
    assert set(labels[0]) == {"id", "type", "tenant", "key_id", "start", "end", "description"}
    assert (out / "requests.jsonl").stat().st_size > 0


def test_simulate_needs_exactly_one_output() -> None:
    """Neither or both of --out-dir and --kafka is a usage error."""
    assert CliRunner().invoke(command, []).exit_code == 2
    assert CliRunner().invoke(command, ["--out-dir", "x", "--kafka", "127.0.0.1:9092"]).exit_code == 2
