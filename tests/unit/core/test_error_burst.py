"""Error burst (apiKey.4xxCluster): floors, baseline error share, the surprise rule, kinds, episodes."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from coretest import MINUTE, T0, solo
from hypothesis import HealthCheck, given, settings, strategies

from keywatch.contract.alerts import Alert
from keywatch.contract.events import RequestRecord
from keywatch.core.codec import encode_state
from keywatch.core.error_burst import (
    KIND_OF_CODE,
    SPEC,
    ErrorBurst,
    ErrorBurstConfig,
    ErrorBurstState,
    binomial_log_tail,
)
from keywatch.core.state import KeyState


class Feeder:
    """Drives one ErrorBurst detector."""

    def __init__(self, request_factory: Callable[..., RequestRecord], **config: Any) -> None:
        self.detector = ErrorBurst(ErrorBurstConfig(**config))
        self.engine = solo(SPEC, self.detector)
        self.state = KeyState(tenant="acme", key_id="key-1")
        self.make = request_factory
        self.alerts: list[Alert] = []

    def minute(self, start_ms: int, ok: int, errors: int = 0, *, status: int = 401, **fields: Any) -> list[Alert]:
        """`ok` 200s then `errors` answers with `status` in the minute from `start_ms`."""
        out: list[Alert] = []
        good = self.make(ts=start_ms)
        for i in range(ok):
            out += self.engine.run_request(self.state, good, start_ms + i)
        for i in range(errors):
            bad = self.make(ts=start_ms + ok + i, status=status, **{k: v(i) for k, v in fields.items()})
            out += self.engine.run_request(self.state, bad, start_ms + ok + i)
        self.alerts += out
        return out


@pytest.fixture
def feeder(request_factory: Callable[..., RequestRecord]) -> Callable[..., Feeder]:
    """A Feeder with the given ErrorBurstConfig overrides."""
    return lambda **config: Feeder(request_factory, **config)


@pytest.mark.parametrize(
    ("status", "kind", "severity"),
    [
        (401, "credential_failure", "medium"),
        (403, "scope_probing", "high"),
        (404, "enumeration", "medium"),
        (429, "throttling", "low"),
        (418, "other", "low"),
    ],
)
def test_burst_of_each_kind_alerts_with_its_kind(
    feeder: Callable[..., Feeder], status: int, kind: str, severity: str
) -> None:
    """A burst of one 4xx kind on a clean key alerts with that kind and severity."""
    f = feeder()
    for m in range(60):
        f.minute(T0 + m * MINUTE, 20)
    [alert] = f.minute(T0 + 60 * MINUTE, 5, 120, status=status)
    ev = alert.data.evidence
    assert (alert.type, ev["kind"], alert.severity, alert.data.status) == (
        "apiKey.4xxCluster",
        kind,
        severity,
        "firing",
    )
    assert alert.data.runbook.endswith("#4xxcluster")


def test_evidence_counts_paths_and_ips(feeder: Callable[..., Feeder]) -> None:
    """Evidence has per-status counts, totals, ratio, distinct and top paths (query dropped) and top IPs."""
    f = feeder(surprise=False)
    f.minute(T0, 10)
    [alert] = f.minute(
        T0 + MINUTE,
        0,
        25,
        status=404,
        path=lambda i: f"/v1/users/{i}?token=secret",
        ip=lambda i: f"203.0.113.{i % 2 + 1}",
    )
    ev = alert.data.evidence
    assert ev["counts"] == {"401": 0, "403": 0, "404": 20, "429": 0, "other_4xx": 0}
    assert (ev["errors"], ev["total"], ev["ratio"], ev["baseline_ratio"], ev["rule"]) == (20, 30, 0.667, 0.0, "share")
    assert ev["distinct_paths"] == 20
    assert all("?" not in path for path, _ in ev["top_paths"])
    assert len(ev["top_paths"]) == 5
    assert ev["top_ips"] == [["203.0.113.1", 10], ["203.0.113.2", 10]]


def test_few_errors_do_not_alert(feeder: Callable[..., Feeder]) -> None:
    """Fewer than surprise_min_errors 4xx, even at a 100% ratio, raise nothing; on a brand-new key (before
    surprise_min_minutes) nor do fewer than min_errors."""
    assert feeder(surprise_min_minutes=0).minute(T0, 0, 7) == []
    assert feeder().minute(T0, 0, 19) == []
    assert len(feeder(surprise_min_minutes=0).minute(T0, 0, 8)) == 1


def test_low_ratio_does_not_alert_by_share_alone(feeder: Callable[..., Feeder]) -> None:
    """Many 401s among many more successes (ratio < 0.5) raise nothing under the share rule alone."""
    f = feeder(surprise=False)
    assert f.minute(T0, 200, 60) == []


def test_key_that_always_errs_is_judged_against_its_baseline(feeder: Callable[..., Feeder]) -> None:
    """A client that always gets ~60% 404s alerts at most once while new, then not even at 70%."""
    f = feeder()
    for m in range(120):
        f.minute(T0 + m * MINUTE, 16, 24, status=404)
    assert [a.data.status for a in f.alerts] in ([], ["firing", "resolved"])
    assert f.minute(T0 + 120 * MINUTE, 12, 28, status=404) == []
    assert f.detector.baseline_ratio(f.state.detectors["errors"], 3) == pytest.approx(0.6, abs=0.01)


def test_episode_per_kind_and_resolution(feeder: Callable[..., Feeder]) -> None:
    """401 and 403 bursts are separate episodes; each resolves with its episode_id after calm minutes."""
    f = feeder()
    f.minute(T0, 10)
    f.minute(T0 + MINUTE, 0, 30, status=401)
    f.minute(T0 + 2 * MINUTE, 0, 80, status=403)
    f.minute(T0 + 3 * MINUTE, 0, 30, status=401)
    firing = [a for a in f.alerts if a.data.status == "firing"]
    assert sorted(a.data.evidence["kind"] for a in firing) == ["credential_failure", "scope_probing"]
    for m in range(4, 20):
        f.minute(T0 + m * MINUTE, 20)
    resolved = [a for a in f.alerts if a.data.status == "resolved"]
    assert {a.data.episode_id for a in resolved} == {a.data.episode_id for a in firing}
    assert {a.id for a in resolved}.isdisjoint({a.id for a in firing})
    assert (f.state.detectors["errors"].episodes, f.state.episodes) == ({}, {})


def test_late_errors_within_window_count_and_older_are_dropped(feeder: Callable[..., Feeder]) -> None:
    """A late 4xx inside the window is counted in its minute; one older than the window is dropped."""
    f = feeder()
    f.minute(T0 + 10 * MINUTE, 1)
    f.minute(T0 + 8 * MINUTE, 0, 1, status=401)
    f.minute(T0 + 2 * MINUTE, 0, 1, status=401)
    st = f.state.detectors["errors"]
    assert (st.window[0], st.window[1], st.late_dropped) == (2, 1, 1)


def test_same_input_twice_gives_same_ids(feeder: Callable[..., Feeder]) -> None:
    """Replaying a burst yields the same alert and episode ids."""
    runs = []
    for _ in range(2):
        f = feeder()
        f.minute(T0, 10)
        f.minute(T0 + MINUTE, 0, 30, status=403)
        for m in range(2, 15):
            f.minute(T0 + m * MINUTE, 10)
        runs.append([(a.id, a.data.episode_id) for a in f.alerts])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 2


# -- minute roll-over: the closed form against the step-by-step original ---------------------------------------


class SteppingErrorBurst(ErrorBurst):
    """The roll-over as first written, one step per elapsed minute: the reference for the closed form."""

    def _advance(self, st: ErrorBurstState, minute: int, record: RequestRecord, findings: list[Any]) -> None:
        cfg = self.config
        for _ in range(min(minute - st.minute, cfg.window_minutes + cfg.resolve_minutes + 1)):
            self._reference_step(st, record, findings)
        st.minute = minute
        horizon = minute - cfg.window_minutes + 1
        for table in (st.paths, st.ips):
            for stale in [k for k, v in table.items() if v.last_minute < horizon]:
                del table[stale]

    def _reference_step(self, st: ErrorBurstState, record: RequestRecord, findings: list[Any]) -> None:
        oldest = st.buckets.pop(0)
        st.buckets.append([0] * 7)
        st.minute += 1
        window = st.window
        for j in range(7):
            window[j] -= oldest[j]
        episodes = st.episodes
        if oldest[0] > 0:
            a = self._alpha if st.active_minutes >= int(1.0 / self._alpha) else 1.0 / (st.active_minutes + 1)
            st.usual_total = round(st.usual_total + a * (oldest[0] - st.usual_total), 4)
            be = st.usual_errors
            for kind in range(1, 6):
                be[kind - 1] = round(be[kind - 1] + a * (oldest[kind] - be[kind - 1]), 4)
            st.active_minutes += 1
        for code in list(episodes):
            kind = KIND_OF_CODE[code]
            episode = episodes[code]
            episode.quiet_minutes = 0 if self.holds(st, kind) else episode.quiet_minutes + 1
            if episode.quiet_minutes >= self.config.resolve_minutes:
                findings.append(self._end(st, record, kind))


def _record(ts: int, status: int, path: str = "/v1/orders", ip: str = "192.0.2.10") -> RequestRecord:
    return RequestRecord.model_validate(
        {"ts": ts, "tenant": "acme", "key_id": "key-1", "env": "live", "ip": ip, "method": "GET", "path": path}
        | {"status": status}
    )


def run_both(config: ErrorBurstConfig, records: list[RequestRecord]) -> tuple[list[Alert], KeyState]:
    """Feed both implementations; after every request their serialised states and alerts must be identical."""
    fast, slow = solo(SPEC, ErrorBurst(config)), solo(SPEC, SteppingErrorBurst(config))
    fast_state, slow_state = KeyState(tenant="acme", key_id="key-1"), KeyState(tenant="acme", key_id="key-1")
    alerts: list[Alert] = []
    for i, record in enumerate(records):
        ts = int(record.ts.timestamp() * 1000)
        got, want = fast.run_request(fast_state, record, ts), slow.run_request(slow_state, record, ts)
        assert [a.model_dump_json() for a in got] == [a.model_dump_json() for a in want], f"request {i}"
        assert encode_state(fast_state) == encode_state(slow_state), f"request {i}"
        alerts += got
    return alerts, fast_state


def _burst(start_ms: int, minutes: int, errors: int, status: int, ok: int = 2) -> list[RequestRecord]:
    """`minutes` minutes from `start_ms`, each with `ok` 200s then `errors` answers with `status`."""
    out = []
    for m in range(minutes):
        at = start_ms + m * MINUTE
        out += [_record(at + i, 200) for i in range(ok)]
        out += [_record(at + ok + i, status, path=f"/v1/users/{i % 7}", ip=f"203.0.113.{i % 3}") for i in range(errors)]
    return out


def test_long_gap_without_episode_folds_every_busy_minute_once() -> None:
    """After a day without requests the window is empty and each minute that had traffic was learned once."""
    config = ErrorBurstConfig(min_errors=50)
    records = [*_burst(T0, 3, 4, 404), _record(T0 + 3 * MINUTE + 5, 200), _record(T0 + 24 * 60 * MINUTE, 200)]
    _, state = run_both(config, records)
    err = state.detectors["errors"]
    assert err.active_minutes == 4
    assert err.window == [1, 0, 0, 0, 0, 0, 0]
    assert err.paths == {}


@pytest.mark.parametrize("window", [1, 5])
@pytest.mark.parametrize("resolve", [1, 3])
@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_gaps_at_the_window_and_resolve_boundaries_match_stepping(window: int, resolve: int, extra: int) -> None:
    """An open episode, then a gap of window-1, window, window+resolve(+-1) or window+resolve+1 minutes."""
    config = ErrorBurstConfig(window_minutes=window, resolve_minutes=resolve, min_errors=5)
    for gap in {window - 1, window, window + resolve + extra, window + resolve + 1, window + resolve + 2, 10_000}:
        if gap < 1:
            continue
        records = [*_burst(T0, 2, 12, 401), _record(T0 + (1 + gap) * MINUTE + 7, 200)]
        alerts, state = run_both(config, records)
        assert alerts[0].data.status == "firing"
        if gap > window + resolve:  # long enough for the episode to end on this request
            assert alerts[-1].data.status == "resolved", gap
            assert (state.detectors["errors"].episodes, state.episodes) == ({}, {})


def test_two_open_episodes_resolve_in_one_gap_like_stepping() -> None:
    """Episodes of two kinds that both end in the same gap resolve with the same alerts as stepping gives."""
    config = ErrorBurstConfig(min_errors=5, resolve_minutes=2)
    records = _burst(T0, 2, 12, 401) + _burst(T0 + 2 * MINUTE, 1, 40, 403) + _burst(T0 + 3 * MINUTE, 1, 0, 200)
    records.append(_record(T0 + 60 * MINUTE, 404))
    alerts, _ = run_both(config, records)
    assert sorted((a.data.status, a.data.evidence["status"]) for a in alerts) == [
        ("firing", "401"),
        ("firing", "403"),
        ("resolved", "401"),
        ("resolved", "403"),
    ]


minute_groups = strategies.lists(
    strategies.tuples(
        strategies.one_of(
            strategies.sampled_from([0, 1, 2, 3, 5, 6, 7, 8, 11, 12, 59, 60, 1440]), strategies.integers(0, 5000)
        ),
        strategies.integers(min_value=0, max_value=6),  # minutes late (0: on time)
        strategies.integers(min_value=1, max_value=25),
        strategies.sampled_from([200, 200, 204, 400, 401, 403, 404, 404, 418, 429, 500]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=minute_groups,
    window=strategies.integers(min_value=1, max_value=6),
    resolve=strategies.integers(min_value=1, max_value=4),
    min_errors=strategies.integers(min_value=1, max_value=8),
    baseline_min=strategies.sampled_from([0, 2, 30]),
    half_life=strategies.sampled_from([1.0, 3.0, 1440.0]),
)
def test_roll_over_matches_stepping_for_any_traffic(
    groups: list[tuple[int, int, int, int]],
    window: int,
    resolve: int,
    min_errors: int,
    baseline_min: int,
    half_life: float,
) -> None:
    """Any gaps, late minutes, bursts and episodes: the same states and alerts as minute-by-minute stepping."""
    config = ErrorBurstConfig(
        window_minutes=window,
        resolve_minutes=resolve,
        min_errors=min_errors,
        baseline_min_minutes=baseline_min,
        baseline_half_life_minutes=half_life,
        max_paths=3,
        max_ips=3,
    )
    now, records = T0, []
    for gap, late, count, status in groups:
        now += gap * MINUTE
        at = now - late * MINUTE
        records += [_record(at + i, status, path=f"/p/{i % 5}", ip=f"198.51.100.{i % 4}") for i in range(count)]
    run_both(config, records)


# -- the surprise rule --------------------------------------------------------------------------------------


def _spread(
    f: Feeder, start_ms: int, ok: int, errors: int, status: int = 401, error_path: Callable[[int], str] | None = None
) -> list[Alert]:
    """One minute from `start_ms` with `ok` 200s and `errors` answers with `status`, interleaved evenly."""
    out: list[Alert] = []
    n = ok + errors
    error_at = {round(i * n / errors) for i in range(errors)} if errors else set()
    seen = 0
    for i in range(n):
        ts = start_ms + i * (MINUTE // max(1, n))
        if i in error_at and seen < errors:
            path = error_path(seen) if error_path else "/v1/customers"
            record = f.make(ts=ts, status=status, path=path)
            seen += 1
        else:
            record = f.make(ts=ts)
        out += f.engine.run_request(f.state, record, ts)
    f.alerts += out
    return out


def _history(f: Feeder, minutes: int, ok: int, errors: int = 0, status: int = 401, start_ms: int = T0) -> None:
    for m in range(minutes):
        _spread(f, start_ms + m * MINUTE, ok, errors, status)


def test_binomial_tail_against_an_exact_sum() -> None:
    """binomial_log_tail is the log of the exact upper tail, and 0 at or below the mean."""
    n, p = 300, 0.01
    for k in (4, 8, 15, 40):
        exact = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
        assert binomial_log_tail(k, n, p) == pytest.approx(math.log(exact), rel=1e-9)
    assert binomial_log_tail(3, 300, 0.01) == 0.0
    assert binomial_log_tail(5, 4, 0.5) == -math.inf


def test_stuffing_burst_on_a_quiet_key_fires_within_the_first_minute(feeder: Callable[..., Feeder]) -> None:
    """15 401s a minute on a key that makes 2 requests a minute and never errs fire inside the first minute,
    with the learned rate, expected and observed errors and the p-value in the evidence."""
    f = feeder()
    _history(f, 120, 2)
    burst = T0 + 120 * MINUTE
    [alert] = _spread(f, burst, 2, 15)
    ev = alert.data.evidence
    assert alert.time.timestamp() * 1000 - burst < MINUTE
    assert ev["rule"] == "surprise"
    assert ev["recent_errors"] == 8
    assert ev["learned_ratio"] < 0.01  # the prior, fading as requests are learned: the key never got a 401
    assert ev["expected_errors"] < 0.5
    assert ev["p_value"] < 1e-6
    assert ev["surprise"] > 6
    assert ev["recent_seconds"] == 120
    assert "against" in alert.data.summary


def test_slow_404_enumeration_fires(feeder: Callable[..., Feeder]) -> None:
    """404s at 15 a minute with distinct ids on a key with 20 requests a minute and 1% 404s fire."""
    f = feeder()
    for m in range(240):
        _spread(f, T0 + m * MINUTE, 20, 1 if m % 5 == 0 else 0, status=404)
    assert f.alerts == []
    start = T0 + 240 * MINUTE
    out = _spread(f, start, 20, 15, status=404, error_path=lambda i: f"/v1/customers/cus_{i:06d}")
    [alert] = out
    assert alert.data.evidence["kind"] == "enumeration"


def test_403_probe_on_a_busy_key_fires_within_two_minutes(feeder: Callable[..., Feeder]) -> None:
    """6 403s a minute on a key with 300 requests a minute and 0.2% 403s normally fire within 2 minutes."""
    f = feeder()
    for m in range(180):
        _spread(f, T0 + m * MINUTE, 300, 1 if m % 2 == 0 else 0, status=403)
    assert f.alerts == []
    start = T0 + 180 * MINUTE
    for m in range(2):
        _spread(f, start + m * MINUTE, 300, 6, status=403)
    [alert] = f.alerts
    assert alert.data.evidence["kind"] == "scope_probing"
    assert alert.time.timestamp() * 1000 - start < 2 * MINUTE


def test_steady_high_error_rate_at_high_volume_is_quiet(feeder: Callable[..., Feeder]) -> None:
    """A key that always gets 5% 404s at 400 requests a minute never alerts."""
    f = feeder()
    _history(f, 240, 380, 20, status=404)
    assert f.alerts == []


def test_brief_blip_and_busy_noise_are_quiet(feeder: Callable[..., Feeder]) -> None:
    """3 401s in a minute on a quiet key, and a busy key's usual scattered errors, raise nothing."""
    quiet = feeder()
    _history(quiet, 60, 2)
    assert _spread(quiet, T0 + 60 * MINUTE, 2, 3) == []
    busy = feeder()
    rng = random.Random(3)
    for m in range(600):
        errors = sum(rng.random() < 0.004 for _ in range(250))
        _spread(busy, T0 + m * MINUTE, 250 - errors, errors, status=404)
    assert busy.alerts == []


def test_5xx_during_a_deploy_are_not_counted(feeder: Callable[..., Feeder]) -> None:
    """Two minutes of 40% 5xx (a bad deploy) are not 4xx and raise nothing."""
    f = feeder()
    _history(f, 60, 20)
    for m in range(2):
        _spread(f, T0 + (60 + m) * MINUTE, 30, 20, status=503)
    assert f.alerts == []


def test_key_used_to_a_share_is_judged_against_it(feeder: Callable[..., Feeder]) -> None:
    """A key that always gets ~20% 401s does not alert at 25%, but does at 60%."""
    f = feeder()
    _history(f, 180, 80, 20)
    before = len(f.alerts)
    _history(f, 3, 75, 25, start_ms=T0 + 180 * MINUTE)
    assert len(f.alerts) == before
    _history(f, 1, 40, 60, start_ms=T0 + 183 * MINUTE)
    assert [a.data.status for a in f.alerts[before:]] == ["firing"]


def test_surprise_episode_resolves_once_calm(feeder: Callable[..., Feeder]) -> None:
    """An episode opened by the surprise rule resolves after resolve_minutes calm minutes."""
    f = feeder()
    _history(f, 60, 5)
    _history(f, 3, 5, 20, start_ms=T0 + 60 * MINUTE)
    _history(f, 10, 5, start_ms=T0 + 63 * MINUTE)
    assert [a.data.status for a in f.alerts] == ["firing", "resolved"]
