"""The chaos soak's pure parts: the alert-id comparison, its input and its kill schedule."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson

from keywatch.config import Settings
from keywatch.contract.alerts import Alert
from keywatch.replay import replay
from keywatch.runtime import make_engine
from tests.chaos import NEW_RANGES, REVOKE_EVERY, build_soak_input, compare_alert_ids, kill_schedule

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_identical_sets_are_ok_with_nothing_counted() -> None:
    """The same ids once each: nothing missing, extra or duplicated."""
    result = compare_alert_ids({"a", "b"}, ["b", "a"])
    assert (result.missing, result.extra, result.duplicates) == (frozenset(), frozenset(), 0)
    assert result.ok
    assert (result.expected, result.emitted) == (2, 2)


def test_duplicates_are_counted_per_re_emission_and_allowed() -> None:
    """An id emitted three times counts two duplicates; duplicates alone do not fail the soak."""
    result = compare_alert_ids({"a", "b"}, ["a", "b", "a", "a"])
    assert result.duplicates == 2
    assert result.emitted == 4
    assert result.ok


def test_missing_and_extra_ids_fail() -> None:
    """An expected id never emitted is missing, an emitted id replay does not emit is extra: either fails."""
    missing = compare_alert_ids({"a", "b"}, ["a"])
    assert missing.missing == {"b"}
    assert not missing.ok
    extra = compare_alert_ids({"a"}, ["a", "z", "z"])
    assert extra.extra == {"z"}
    assert extra.duplicates == 1
    assert not extra.ok


def test_nothing_emitted_is_all_missing() -> None:
    """A worker that emitted nothing misses every expected id."""
    result = compare_alert_ids(["a", "b", "c"], [])
    assert result.missing == {"a", "b", "c"}
    assert (result.emitted, result.duplicates) == (0, 0)


def test_soak_input_learns_many_networks_and_alerts_only_on_the_new_ones(tmp_path: Path) -> None:
    """Replayed, the soak's input alerts on exactly two new ranges per key (each resolved), never on a learned
    one."""
    keys, networks = 16, 12
    soak = build_soak_input(keys=keys, live_requests=30, networks=networks, now=NOW)
    requests, lifecycle = soak.write(tmp_path)
    alerts: list[Alert] = []
    replay(
        requests.read_bytes().splitlines(), lifecycle.read_bytes().splitlines(), make_engine(Settings()), alerts.append
    )
    by_type = Counter(a.type for a in alerts if a.data.status != "resolved")
    assert by_type["apiKey.created"] == keys
    assert by_type["apiKey.usedFromNewIp"] == NEW_RANGES * keys
    # Each new range is in a /16 of its own: its own episode, resolved once the network is quiet.
    ends = [a for a in alerts if a.type == "apiKey.usedFromNewIp" and a.data.status == "resolved"]
    assert len(ends) == NEW_RANGES * keys
    assert by_type["apiKey.revoked"] == len(range(0, keys, REVOKE_EVERY))
    assert by_type["apiKey.usedAfterRevoke"] >= len(range(0, keys, REVOKE_EVERY))
    new_ip = [a for a in alerts if a.type == "apiKey.usedFromNewIp" and a.data.status == "firing"]
    assert all(a.data.evidence["range"].startswith("172.") for a in new_ip)
    learned = {orjson.loads(v)["ip"].rsplit(".", 1)[0] for _, v in soak.segments[1].records}
    assert len(learned) == keys * networks, "every key learns its own networks"


def test_soak_segments_alternate_topics_in_event_time_order() -> None:
    """Segments alternate between the two topics and each is in event-time order (the order replay reads)."""
    soak = build_soak_input(keys=5, live_requests=10, now=NOW)
    assert [s.topic for s in soak.segments] == ["lifecycle", "requests", "lifecycle", "requests"]
    last = ""
    for segment in soak.segments:
        times = [orjson.loads(v)["ts"] for _, v in segment.records]
        assert times == sorted(times)
        assert times[0] >= last
        last = times[-1]
    assert last < NOW.isoformat(), "event times end before now (the worker dead-letters future records)"


def test_kill_schedule_is_seeded_ordered_and_inside_the_flow() -> None:
    """The same seed gives the same kills, in time order, within the middle of the flow, on either worker."""
    schedule = kill_schedule(seed=3, kills=20, span_s=100.0)
    assert schedule == kill_schedule(seed=3, kills=20, span_s=100.0)
    assert schedule != kill_schedule(seed=4, kills=20, span_s=100.0)
    times = [t for t, _ in schedule]
    assert times == sorted(times)
    assert all(10.0 <= t <= 90.0 for t in times)
    assert {w for _, w in schedule} == {0, 1}
