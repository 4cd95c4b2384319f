"""Stall bookkeeping (keywatch.progress) with a fake clock, its metrics, and what the endpoints say of it."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from keywatch.http import build_http_app
from keywatch.metrics import Metrics
from keywatch.progress import ProgressTracker, RecoveryClock
from keywatch.stream.lag import positions

G = "kw-ingest"
TP0 = ("api.requests", 0)
TP1 = ("api.requests", 1)


@pytest.fixture
def tracker() -> ProgressTracker:
    return ProgressTracker(stall_seconds=60, watchdog_seconds=300)


def _stalled(tracker: ProgressTracker) -> dict[tuple[str, int], float]:
    return {(p.topic, p.partition): p.stalled_seconds for p in tracker.partitions()}


def test_lag_without_progress_becomes_a_stall(tracker: ProgressTracker) -> None:
    """A partition with lag whose position does not move is stalled for the time since it was first seen so."""
    tracker.observe(G, {TP0: (10, 50)}, now=1000.0)
    tracker.observe(G, {TP0: (10, 80)}, now=1059.0)
    assert _stalled(tracker) == {TP0: 59.0}
    assert tracker.stalled() == []
    tracker.observe(G, {TP0: (10, 90)}, now=1060.0)
    [stall] = tracker.stalled()
    assert (stall.group, stall.topic, stall.partition, stall.lag, stall.stalled_seconds) == (G, *TP0, 80, 60.0)
    assert tracker.watchdog_tripped() == []
    tracker.observe(G, {TP0: (10, 90)}, now=1300.0)
    assert [p.partition for p in tracker.watchdog_tripped()] == [0]


def test_progress_resets_the_clock(tracker: ProgressTracker) -> None:
    """A position that moves, even by one record and while lag grows, is progress."""
    tracker.observe(G, {TP0: (10, 50)}, now=0.0)
    tracker.observe(G, {TP0: (11, 500)}, now=100.0)
    assert _stalled(tracker) == {TP0: 0.0}
    tracker.observe(G, {TP0: (11, 900)}, now=130.0)
    assert _stalled(tracker) == {TP0: 30.0}


def test_no_lag_is_never_a_stall(tracker: ProgressTracker) -> None:
    """An idle input (position at the highwater) never stalls; once records arrive, the clock counts from the
    last measurement that saw it caught up."""
    tracker.observe(G, {TP0: (7, 7)}, now=0.0)
    tracker.observe(G, {TP0: (7, 7)}, now=10_000.0)
    assert tracker.stalled() == []
    assert _stalled(tracker) == {TP0: 0.0}
    tracker.observe(G, {TP0: (7, 9)}, now=10_010.0)
    assert _stalled(tracker) == {TP0: 10.0}
    tracker.observe(G, {TP0: (7, 9)}, now=10_050.0)
    assert _stalled(tracker) == {TP0: 50.0}


def test_unknown_offsets_forget_the_group(tracker: ProgressTracker) -> None:
    """Offsets that cannot be measured (broker away, rebalance, recovery) end every clock: no stall right after."""
    tracker.observe(G, {TP0: (10, 50)}, now=0.0)
    tracker.observe(G, None, now=30.0)
    assert tracker.partitions() == []
    assert tracker.lag() == {}
    tracker.observe(G, {TP0: (10, 60)}, now=1000.0)
    assert _stalled(tracker) == {TP0: 0.0}
    assert tracker.stalled() == []
    assert tracker.watchdog_tripped() == []


def test_revoked_partitions_are_dropped_and_new_ones_start_fresh(tracker: ProgressTracker) -> None:
    """A partition no longer assigned disappears; a newly assigned one starts its clock at its first measurement."""
    tracker.observe(G, {TP0: (10, 50)}, now=0.0)
    tracker.observe(G, {TP1: (3, 9)}, now=100.0)
    assert _stalled(tracker) == {TP1: 0.0}


def test_lag_is_summed_by_group_and_topic(tracker: ProgressTracker) -> None:
    """keywatch_consumer_lag's value: highwater minus position over the assigned partitions, never negative."""
    tracker.observe(G, {TP0: (10, 50), TP1: (5, 6), ("apikey.lifecycle", 0): (9, 4)}, now=0.0)
    tracker.observe("kw", {("kw-keyed", 2): (0, 3)}, now=0.0)
    assert tracker.lag() == {(G, "api.requests"): 41, (G, "apikey.lifecycle"): 0, ("kw", "kw-keyed"): 3}


def test_watchdog_off_never_trips() -> None:
    """watchdog_seconds 0: however long the stall, nothing asks for a restart."""
    tracker = ProgressTracker(stall_seconds=5, watchdog_seconds=0)
    tracker.observe(G, {TP0: (0, 1)}, now=0.0)
    tracker.observe(G, {TP0: (0, 1)}, now=1e9)
    assert tracker.stalled()
    assert tracker.watchdog_tripped() == []


@given(
    st.lists(
        st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 8), st.floats(0, 50))),
        max_size=30,
    )
)
def test_stall_never_exceeds_the_time_since_the_position_last_moved(
    steps: list[tuple[int, int, float] | None],
) -> None:
    """Whatever the measurements, a reported stall is at most the time since the position last changed, the
    lag was last zero, or the offsets were last unknown."""
    tracker = ProgressTracker(stall_seconds=1)
    now, last_reset, last_position = 0.0, 0.0, None
    for step in steps:
        if step is None:
            tracker.observe(G, None, now)
            last_reset, last_position = now, None
            continue
        position, highwater, dt = step
        now += dt
        if position != last_position or highwater <= position:
            last_reset = now
        last_position = position
        tracker.observe(G, {TP0: (position, highwater)}, now)
        [p] = tracker.partitions()
        assert p.stalled_seconds <= now - last_reset + 1e-9
        assert p.lag == max(0, highwater - position)


def test_positions_use_committed_else_earliest() -> None:
    """A group that never committed a partition is at its earliest offset (where it would start reading)."""
    from aiokafka import TopicPartition

    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    assert positions([a, b], {a: 7}, {b: 3}, {a: 10, b: 5}) == {("t", 0): (7, 10), ("t", 1): (3, 5)}


def test_metrics_follow_the_tracker(tracker: ProgressTracker) -> None:
    """The lag and stall gauges carry group, topic (and partition) only, and go away with the partitions."""
    metrics = Metrics(CollectorRegistry())
    tracker.observe(G, {TP0: (10, 50), TP1: (5, 5)}, now=0.0)
    tracker.observe(G, {TP0: (10, 50), TP1: (5, 5)}, now=70.0)
    metrics.export_progress(tracker)
    value = metrics.registry.get_sample_value
    assert value("keywatch_consumer_lag", {"group": G, "topic": "api.requests"}) == 40
    assert value("keywatch_partition_stalled_seconds", {"group": G, "topic": "api.requests", "partition": "0"}) == 70
    assert value("keywatch_partition_stalled_seconds", {"group": G, "topic": "api.requests", "partition": "1"}) == 0
    tracker.observe(G, None, now=80.0)
    metrics.export_progress(tracker)
    assert value("keywatch_consumer_lag", {"group": G, "topic": "api.requests"}) is None
    assert value("keywatch_partition_stalled_seconds", {"group": G, "topic": "api.requests", "partition": "0"}) is None


async def test_readyz_details_and_healthz_watchdog() -> None:
    """/readyz carries the details (which partitions stalled); /healthz is 503 with what tripped the watchdog."""
    metrics = Metrics(CollectorRegistry())
    problems: dict[str, Any] = {}
    details = {"stalled": [{"group": G, "topic": "api.requests", "partition": 0, "lag": 3, "stalled_seconds": 61}]}
    app = build_http_app(metrics, lambda: {"progressing": False}, lambda: details, lambda: dict(problems))
    async with TestClient(TestServer(app)) as client:
        ready = await client.get("/readyz")
        assert ready.status == 503
        body = await ready.json()
        assert body["checks"] == {"progressing": False}
        assert body["stalled"][0]["partition"] == 0
        assert (await client.get("/healthz")).status == 200
        problems["watchdog"] = details["stalled"]
        alive = await client.get("/healthz")
        assert alive.status == 503
        assert (await alive.json())["watchdog"][0]["topic"] == "api.requests"


def test_recovery_clock_counts_one_unbroken_recovery() -> None:
    """The recovery clock counts from the first observation of a recovery, resets when it ends, starts again."""
    clock = RecoveryClock()
    assert clock.seconds(100.0) == 0.0
    clock.observe(True, 100.0)
    clock.observe(True, 700.0)
    assert clock.seconds(701.0) == 601.0
    clock.observe(False, 702.0)
    assert clock.seconds(703.0) == 0.0
    clock.observe(True, 800.0)
    assert clock.seconds(805.0) == 5.0
