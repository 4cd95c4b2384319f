"""Rate baseline (apiKey.requestSpike): floors, daily cycles, gaps, late events, episodes."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import pytest
from coretest import DAY, HOUR, MINUTE, T0, solo
from hypothesis import HealthCheck, given, settings, strategies

from keywatch.contract.alerts import Alert
from keywatch.contract.events import RequestRecord
from keywatch.core.codec import encode_state
from keywatch.core.rate_baseline import (
    SPEC,
    RateBaseline,
    RateBaselineConfig,
    RateState,
    fold,
    hours_touched,
    minutes_per_hour,
)
from keywatch.core.state import KeyState

SPIKE = "apiKey.requestSpike"


class Feeder:
    """Drives one RateBaseline with per-minute counts, one record object per minute (cheap enough for days)."""

    def __init__(self, request_factory: Callable[..., RequestRecord], **config: Any) -> None:
        self.detector = RateBaseline(RateBaselineConfig(**config))
        self.engine = solo(SPEC, self.detector)
        self.state = KeyState(tenant="acme", key_id="key-1")
        self.make = request_factory
        self.alerts: list[Alert] = []
        self.detect_index: list[int] = []  # position within its minute of each request that raised an alert

    def minute(self, start_ms: int, count: int, *, skew_ms: int = 0) -> list[Alert]:
        """`count` requests spread over the minute starting at `start_ms`."""
        out: list[Alert] = []
        if count <= 0:
            return out
        record = self.make(ts=start_ms + skew_ms)
        step = max(1, MINUTE // count)
        for i in range(count):
            new = self.engine.run_request(self.state, record, start_ms + skew_ms + min(i * step, MINUTE - 1))
            if new:
                self.detect_index.extend([i] * len(new))
                out.extend(new)
        self.alerts.extend(out)
        return out

    def run(self, start_ms: int, counts: Iterable[int]) -> list[Alert]:
        """Consecutive minutes from `start_ms` with the given counts."""
        out: list[Alert] = []
        for i, count in enumerate(counts):
            out.extend(self.minute(start_ms + i * MINUTE, count))
        return out


def noisy(rng: random.Random, mean: float) -> int:
    """A Poisson-like count (normal approximation) around `mean`."""
    return max(0, round(rng.gauss(mean, math.sqrt(mean)))) if mean > 0 else 0


def daily(minute_of_day: int) -> float:
    """A strong daily cycle: about 5/min at night (03:00 UTC) and 200/min at the peak (15:00 UTC)."""
    return 5 + 195 * (1 - math.cos(2 * math.pi * (minute_of_day - 180) / 1440)) / 2


@pytest.fixture
def feeder(request_factory: Callable[..., RequestRecord]) -> Callable[..., Feeder]:
    """A Feeder with the given RateBaselineConfig overrides (armed after an hour unless said otherwise)."""
    return lambda **config: Feeder(request_factory, **{"min_history_minutes": 60, **config})


def test_steady_busy_key_does_not_spike(feeder: Callable[..., Feeder]) -> None:
    """A busy key at a steady 2000/min with normal noise raises nothing over six hours."""
    rng = random.Random(1)
    f = feeder()
    assert f.run(T0, (noisy(rng, 2000) for _ in range(6 * 60))) == []
    assert f.state.detectors["rate"].threshold > 2000 * 2


def test_spike_fires_within_the_minute_and_resolves(feeder: Callable[..., Feeder]) -> None:
    """A spike is detected at the request that crosses the threshold; one episode, resolved with the same id."""
    rng = random.Random(2)
    f = feeder()
    f.run(T0, (noisy(rng, 100) for _ in range(120)))
    threshold = f.state.detectors["rate"].threshold
    [start] = f.run(T0 + 120 * MINUTE, [1500, 1500, 1500])
    assert (start.type, start.data.status) == (SPIKE, "firing")
    assert f.detect_index == [threshold - 1]  # the threshold-th request of the first spike minute
    ev = start.data.evidence
    assert ev["observed_per_minute"] == threshold
    assert 80 < ev["expected_per_minute"] < 120
    assert ev["ratio"] >= 3
    assert ev["score"] >= 6
    assert ev["baseline_minutes"] >= 60
    assert start.data.runbook.endswith("#requestspike")
    [end] = f.run(T0 + 123 * MINUTE, (noisy(rng, 100) for _ in range(7)))
    assert (end.data.status, end.data.episode_id) == ("resolved", start.data.episode_id)
    assert end.id != start.id
    assert end.data.evidence["peak_per_minute"] == 1500
    assert end.time > start.time


def test_quiet_key_with_zero_variance_needs_the_floor(feeder: Callable[..., Feeder]) -> None:
    """A key doing exactly 2/min does not alert on 40 requests in a minute, but does on 200."""
    f = feeder()
    f.run(T0, [2] * 180)
    assert f.state.detectors["rate"].spread == 0
    assert f.run(T0 + 180 * MINUTE, [40, 2, 2]) == []
    [alert] = f.run(T0 + 183 * MINUTE, [200])
    assert alert.severity == "high"  # 100x the usual rate


def test_new_key_is_not_armed_before_history(feeder: Callable[..., Feeder]) -> None:
    """A key busy from its first minute is its own baseline: nothing before min_history_minutes."""
    f = feeder()
    assert f.run(T0, [500] * 50) == []
    assert f.state.detectors["rate"].threshold is None


def test_daily_peak_is_expected_but_night_spike_is_not(feeder: Callable[..., Feeder]) -> None:
    """With four days of a daily cycle, the normal afternoon peak is quiet; the same rate at night alerts."""
    rng = random.Random(3)
    f = feeder()
    assert f.run(T0, (noisy(rng, daily(m % 1440)) for m in range(4 * 1440))) == []
    assert f.state.detectors["rate"].minutes >= 3 * 1440
    # Day 5 from 00:00 to 16:00 (through the peak) as usual.
    assert f.run(T0 + 4 * DAY, (noisy(rng, daily(m)) for m in range(16 * 60))) == []
    # Day 6, 03:00: the peak-hour rate arrives in the middle of the night.
    f.run(T0 + 4 * DAY + 16 * HOUR, (noisy(rng, daily((16 * 60 + m) % 1440)) for m in range(11 * 60)))
    assert [a.data.status for a in f.run(T0 + 5 * DAY + 3 * HOUR, [400])] == ["firing"]


def test_without_profile_the_ramp_to_a_daily_peak_does_not_fire(feeder: Callable[..., Feeder]) -> None:
    """Even before the hour profile exists, a gradual ramp to the daily peak stays below the floors."""
    rng = random.Random(4)
    f = feeder()
    assert f.run(T0, (noisy(rng, daily(m % 1440)) for m in range(1440))) == []


def test_gap_of_zero_minutes_is_accounted_for(feeder: Callable[..., Feeder]) -> None:
    """A key quiet for three days has the gap folded in as zero minutes, and its usual rate is not a spike."""
    rng = random.Random(5)
    f = feeder()
    f.run(T0, (noisy(rng, 100) for _ in range(1440)))
    before = msgspec.structs.replace(f.state.detectors["rate"])
    assert f.run(T0 + 4 * DAY, (noisy(rng, 100) for _ in range(30))) == []
    after = f.state.detectors["rate"]
    assert after.minutes >= before.minutes + 3 * 1440
    assert after.level < before.level / 2


def test_late_requests_are_counted_in_their_minute_or_dropped(
    feeder: Callable[..., Feeder], request_factory: Callable[..., RequestRecord]
) -> None:
    """A request a few minutes late lands in its bucket; one older than late_minutes is only counted as dropped."""
    f = feeder(late_minutes=5)
    f.run(T0, [10] * 10)
    st = f.state.detectors["rate"]
    buckets = list(st.counts)
    f.engine.run_request(f.state, request_factory(ts=T0 + 7 * MINUTE), T0 + 7 * MINUTE)
    assert st.counts[-3] == buckets[-3] + 1
    level = st.level
    f.engine.run_request(f.state, request_factory(ts=T0), T0)
    assert (st.late_dropped, st.level, st.minute) == (1, level, (T0 + 9 * MINUTE) // MINUTE)


def test_clock_skew_between_producers_does_not_spike(feeder: Callable[..., Feeder]) -> None:
    """Two gateways, one three minutes behind, each at 50/min: nothing dropped, nothing raised."""
    rng = random.Random(6)
    f = feeder()
    for m in range(240):
        f.minute(T0 + m * MINUTE, noisy(rng, 50))
        f.minute(T0 + m * MINUTE, noisy(rng, 50), skew_ms=-3 * MINUTE)
    assert f.alerts == []
    assert f.state.detectors["rate"].late_dropped == 0


def test_same_input_twice_gives_same_ids(feeder: Callable[..., Feeder]) -> None:
    """Replaying the same minutes gives the same episode and alert ids."""
    runs = []
    for _ in range(2):
        rng = random.Random(7)
        f = feeder()
        f.run(T0, [noisy(rng, 100) for _ in range(90)] + [900, 900] + [100] * 8)
        runs.append([(a.id, a.data.episode_id, a.data.status) for a in f.alerts])
    assert runs[0] == runs[1]
    assert [s for *_, s in runs[0]] == ["firing", "resolved"]


def test_second_episode_gets_new_ids(feeder: Callable[..., Feeder]) -> None:
    """Two spikes separated by calm are two episodes with distinct episode ids."""
    f = feeder()
    f.run(T0, [100] * 90 + [900] + [100] * 10 + [900] + [100] * 10)
    episodes = [a.data.episode_id for a in f.alerts]
    assert len(f.alerts) == 4
    assert episodes[0] == episodes[1] != episodes[2] == episodes[3]


def test_key_stopping_during_spike_resolves_on_next_request(feeder: Callable[..., Feeder]) -> None:
    """With no timers, an episode of a key that stops resolves on its next request, timed at the calm."""
    f = feeder()
    f.run(T0, [100] * 90 + [900])
    [end] = f.run(T0 + 3 * HOUR, [1])
    assert end.data.status == "resolved"
    assert end.data.evidence["ended"] == "2024-03-04T01:36:00.000Z"


def test_engine_wires_rate_detector(
    engine_factory: Callable[..., Any], request_factory: Callable[..., RequestRecord]
) -> None:
    """The default engine includes the spike detector (min_per_minute from the config)."""
    engine = engine_factory(rate={"min_history_minutes": 1, "min_per_minute": 5})
    state = None
    alerts: list[Alert] = []
    for m in range(10):  # minutes enter the baseline once older than late_minutes
        outcome = engine.on_request(state, request_factory(ts=T0 + m * MINUTE))
        state = outcome.state
    for i in range(50):
        alerts += engine.on_request(state, request_factory(ts=T0 + 10 * MINUTE + i)).alerts
    assert [a.type for a in alerts] == [SPIKE]


def test_fold_level_is_exact_for_repeated_values() -> None:
    """Folding k equal minutes at once gives the same level as folding them one by one."""
    one = (10.0, 2.0, 5)
    for _ in range(1000):
        one = fold(*one, 0.0, 1, 0.01)
    many = fold(10.0, 2.0, 5, 0.0, 1000, 0.01)
    assert math.isclose(one[0], many[0], rel_tol=1e-9, abs_tol=1e-12)
    assert one[2] == many[2]


@pytest.mark.parametrize(("first", "count"), [(0, 0), (59, 2), (1439, 3000), (125, 60)])
def test_minutes_per_hour_covers_every_minute(first: int, count: int) -> None:
    """Gap minutes are split over the hours of the day without losing any."""
    split = minutes_per_hour(first, count)
    assert sum(split) == count
    assert len(split) == 24


def _hourly_batch(rng: random.Random, hours: int, burst: int) -> list[int]:
    """About 1/min with a burst of `burst` requests in the first minute of every hour."""
    return [burst if i % 60 == 0 else noisy(rng, 1) for i in range(hours * 60)]


def test_recurring_hourly_batch_job_is_learned(feeder: Callable[..., Feeder]) -> None:
    """A key whose cron job sends 80 requests at the top of every hour does not alert hour after hour."""
    rng = random.Random(7)
    f = feeder()
    assert f.run(T0, _hourly_batch(rng, 48, 80)) == []
    assert f.state.detectors["rate"].peak >= 70


def test_spike_on_a_batch_job_key_still_fires(feeder: Callable[..., Feeder]) -> None:
    """The batch job raises the bar to about twice its burst; a real spike above that still alerts."""
    rng = random.Random(8)
    f = feeder()
    f.run(T0, _hourly_batch(rng, 24, 80))
    [alert] = f.run(T0 + 24 * HOUR + 30 * MINUTE, [400, 400])
    assert alert.data.evidence["recent_peak_per_minute"] >= 70
    assert alert.data.evidence["threshold_per_minute"] >= 2 * 70


def test_peak_guard_can_be_turned_off(feeder: Callable[..., Feeder]) -> None:
    """With peak_ratio = 0 the same batch job alerts once its burst exceeds the floor: the guard is what helps."""
    rng = random.Random(7)
    f = feeder(peak_ratio=0)
    assert f.run(T0, _hourly_batch(rng, 48, 80)) != []


def test_spike_minutes_do_not_raise_the_peak(feeder: Callable[..., Feeder]) -> None:
    """After an attack episode the recent peak still reflects normal minutes only."""
    rng = random.Random(9)
    f = feeder()
    f.run(T0, (noisy(rng, 20) for _ in range(120)))
    f.run(T0 + 120 * MINUTE, [900] * 5)
    f.run(T0 + 125 * MINUTE, (noisy(rng, 20) for _ in range(20)))
    assert f.state.detectors["rate"].peak < 60


def test_client_errors_are_not_counted_as_a_spike(
    feeder: Callable[..., Feeder], request_factory: Callable[..., RequestRecord]
) -> None:
    """A burst of 401s is the 4xx-cluster detector's; the same burst of 200s is a spike."""
    rng = random.Random(10)
    f = feeder()
    f.run(T0, (noisy(rng, 2) for _ in range(180)))
    f.make = lambda **kw: request_factory(status=401, **kw)
    assert f.run(T0 + 180 * MINUTE, [300, 300]) == []
    f.make = request_factory
    [alert] = f.run(T0 + 182 * MINUTE, [300])
    assert alert.type == SPIKE


def test_first_working_morning_is_learned_by_default(request_factory: Callable[..., RequestRecord]) -> None:
    """With the default settings a business-hours key's first 9 o'clock surge is learned, not alerted."""
    rng = random.Random(11)
    f = Feeder(request_factory)
    quiet_night = [noisy(rng, 1) for _ in range(11 * 60)]
    working_day = [noisy(rng, 75) for _ in range(11 * 60)]
    assert f.run(T0, quiet_night + working_day) == []
    assert f.state.detectors["rate"].threshold is None


# -- minute roll-over: the optimised fold against the original minute-by-minute `fold` ---------------------------


class SteppingRateBaseline(RateBaseline):
    """The roll-over as first written (`fold` per closed minute, gaps through `minutes_per_hour`, every value
    rounded in `_arm`): the reference for the written-out and closed forms."""

    def _advance(self, st: RateState, minute: int, record: RequestRecord, findings: list[Any]) -> None:
        m: int = st.minute
        b: list[int] = st.counts
        episode = st.episode
        if episode is not None:
            threshold = self.calm_threshold(st, episode)
            for i in range(min(minute - m, self.config.resolve_minutes + 1)):
                closed = b[-1] if i == 0 else 0
                episode.quiet_minutes = 0 if closed >= threshold else episode.quiet_minutes + 1
                if episode.quiet_minutes >= self.config.resolve_minutes:
                    findings.append(self._end(st, record, end_minute=m + i + 1))
                    break
        self._close_sustained(st, minute)
        cap = self._cap(st)
        ring = len(b)
        shift = minute - m
        leaving = min(shift, ring)
        first = m - ring + 1
        peak = st.peak
        for i in range(leaving):
            if first + i >= st.first_minute:
                value = b[i] if cap is None else min(b[i], cap)
                self._reference_fold(st, first + i, value, 1)
                peak *= self._peak_keep
                if (cap is None or b[i] < cap) and b[i] > peak:
                    peak = float(b[i])
        if shift > ring:
            self._reference_fold(st, m + 1, 0.0, shift - ring)
            peak *= self._peak_keep ** (shift - ring)
        st.peak = round(peak, 2)
        st.counts = b[leaving:] + [0] * leaving
        st.minute = minute
        self._arm(st, minute)

    def _reference_fold(self, st: RateState, first_minute: int, x: float, k: int) -> None:
        st.level, st.spread, st.minutes = fold(st.level, st.spread, st.minutes, x, k, self._alpha)
        h, hd, hn = st.hour_level, st.hour_spread, st.hour_updates
        for slot, j in enumerate(minutes_per_hour(first_minute, k)):
            if j:
                level, dev, hn[slot] = fold(h[slot], hd[slot], hn[slot], x, j, self._profile_alpha)
                h[slot], hd[slot] = round(level, 3), round(dev, 3)

    def _arm(self, st: RateState, minute: int) -> None:
        cfg = self.config
        expected, spread = st.level, st.spread
        if st.minutes >= self._profile_min:
            slot = (minute // 60) % 24
            h, hd = st.hour_level, st.hour_spread
            expected = max(expected, h[slot - 1], h[slot], h[(slot + 1) % 24])
            spread = max(hd[slot - 1], hd[slot], hd[(slot + 1) % 24])
        spread = max(spread * 1.25, math.sqrt(expected), 1.0)
        st.level, st.spread = round(st.level, 3), round(st.spread, 3)
        st.expected, st.expected_spread = round(expected, 3), round(spread, 3)
        self._arm_sustained(st, minute)
        if st.minutes < cfg.min_history_minutes:
            st.threshold = None
            return
        st.threshold = math.ceil(
            max(
                cfg.min_per_minute,
                cfg.min_ratio * expected,
                expected + cfg.min_score * spread,
                cfg.peak_ratio * st.peak,
            )
        )


def _record(ts: int, status: int = 200) -> RequestRecord:
    return RequestRecord.model_validate(
        {"ts": ts, "tenant": "acme", "key_id": "key-1", "env": "live", "ip": "192.0.2.10", "method": "GET"}
        | {"path": "/v1/orders", "status": status}
    )


def run_both(config: RateBaselineConfig, requests: Iterable[tuple[int, int]]) -> tuple[list[Alert], KeyState]:
    """Feed (ts, status) to both implementations; after every request their serialised states and alerts must be
    identical."""
    fast, slow = solo(SPEC, RateBaseline(config)), solo(SPEC, SteppingRateBaseline(config))
    fast_state, slow_state = KeyState(tenant="acme", key_id="key-1"), KeyState(tenant="acme", key_id="key-1")
    alerts: list[Alert] = []
    for i, (ts, status) in enumerate(requests):
        record = _record(ts, status)
        got, want = fast.run_request(fast_state, record, ts), slow.run_request(slow_state, record, ts)
        assert [a.model_dump_json() for a in got] == [a.model_dump_json() for a in want], f"request {i}"
        assert encode_state(fast_state) == encode_state(slow_state), f"request {i}"
        alerts += got
    return alerts, fast_state


@pytest.mark.parametrize("gap", [1, 5, 6, 7, 8, 59, 60, 61, 1439, 1440, 1441, 2881, 20_000])
def test_sparse_key_gaps_match_minute_by_minute_folding(gap: int) -> None:
    """A key seen every `gap` minutes (ring-sized, hour-sized and day-sized gaps) keeps the original's state."""
    config = RateBaselineConfig(min_history_minutes=30, profile_min_days=0.01)
    requests = [(T0 - 7 * MINUTE + i * gap * MINUTE + i % 3 * 1000, 200) for i in range(40)]
    _, state = run_both(config, requests)
    rate = state.detectors["rate"]
    assert sum(rate.hour_updates) == rate.minutes  # every closed minute counted once, in exactly one hour of the day


def test_hour_of_day_arming_across_hour_and_day_boundaries() -> None:
    """Minutes closed across 23:00 -> 00:00 and 00:59 -> 01:00 land in their hours; arming uses them as before."""
    config = RateBaselineConfig(min_history_minutes=10, profile_min_days=0.0, profile_half_life_days=0.01)
    day = 24 * 60 * MINUTE
    times = [T0 + day - 90 * MINUTE + i * 7 * MINUTE for i in range(30)]  # 22:30 -> 01:53 next day
    requests = [(t + j * 500, 200) for t in times for j in range(3)]
    requests += [(T0 + 2 * day + 59 * MINUTE, 200), (T0 + 2 * day + 60 * MINUTE + 1, 200)]
    _, state = run_both(config, requests)
    rate = state.detectors["rate"]
    assert all(rate.hour_updates[slot] > 0 for slot in (22, 23, 0, 1))
    assert rate.expected >= max(rate.hour_level[0], rate.hour_level[1], rate.hour_level[2])


def test_spike_then_gaps_resolve_like_the_original() -> None:
    """A spike episode, then gaps around the resolve window: the same resolved alerts and state."""
    config = RateBaselineConfig(min_history_minutes=20, min_per_minute=5, resolve_minutes=3, late_minutes=2)
    quiet = [(T0 + m * MINUTE, 200) for m in range(40)]
    for gap in (1, 3, 4, 5, 90):
        start = quiet[-1][0] + MINUTE
        spike = [(start + i * 100, 200) for i in range(40)]
        quiet += [*spike, (start + gap * MINUTE, 200)]
    alerts, _ = run_both(config, quiet)
    assert [a.data.status for a in alerts].count("resolved") >= 2


minute_groups = strategies.lists(
    strategies.tuples(
        strategies.one_of(
            strategies.sampled_from([0, 0, 1, 2, 5, 6, 7, 8, 59, 60, 61, 1439, 1440, 1441, 2881]),
            strategies.integers(0, 5000),
        ),
        strategies.integers(min_value=0, max_value=8),  # minutes late (0: on time)
        strategies.integers(min_value=1, max_value=60),
        strategies.sampled_from([200, 200, 200, 201, 404, 500]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=minute_groups,
    start_minute=strategies.integers(min_value=0, max_value=1439),
    late=strategies.integers(min_value=0, max_value=6),
    history=strategies.sampled_from([1, 30, 1440]),
    level_half_life=strategies.sampled_from([1.0, 5.0, 240.0]),
    profile=strategies.sampled_from([(0.0, 0.001), (0.01, 0.01), (3.0, 7.0)]),
    peak=strategies.sampled_from([(0.0, 1440.0), (2.0, 3.0)]),
    resolve=strategies.integers(min_value=1, max_value=5),
)
def test_roll_over_matches_the_original_for_any_traffic(
    groups: list[tuple[int, int, int, int]],
    start_minute: int,
    late: int,
    history: int,
    level_half_life: float,
    profile: tuple[float, float],
    peak: tuple[float, float],
    resolve: int,
) -> None:
    """Any gaps (hour and day boundaries included), late minutes, spikes, young and old baselines, hour
    profiles on and off: the same states and alerts as the original fold."""
    config = RateBaselineConfig(
        late_minutes=late,
        min_history_minutes=history,
        min_per_minute=3,
        min_score=1.0,
        level_half_life_minutes=level_half_life,
        profile_min_days=profile[0],
        profile_half_life_days=profile[1],
        peak_ratio=peak[0],
        peak_half_life_minutes=peak[1],
        resolve_minutes=resolve,
    )
    now, requests = T0 + start_minute * MINUTE, []
    for gap, minutes_late, count, status in groups:
        now += gap * MINUTE
        at = now - minutes_late * MINUTE
        requests += [(at + i * 700 % MINUTE, status) for i in range(count)]
    run_both(config, requests)


@given(
    first=strategies.integers(min_value=0, max_value=10**8), count=strategies.integers(min_value=0, max_value=10_000)
)
def test_hours_touched_is_minutes_per_hour_without_the_empty_hours(first: int, count: int) -> None:
    """`hours_touched` lists exactly the hours `minutes_per_hour` gives minutes to, with the same minutes."""
    split = minutes_per_hour(first, count)
    assert hours_touched(first, count) == {slot: j for slot, j in enumerate(split) if j}


# -- the sustained rule: slow climbs fire, daily batch jobs and deploy bumps do not ----------------------------


def _flat_days(rng: random.Random, days: int, mean: float, batch_hour: int | None = None) -> list[int]:
    """`days` days at about `mean`/min; with `batch_hour`, x8 for the first 15 minutes of that UTC hour daily."""
    counts = []
    for i in range(days * 1440):
        batch = batch_hour is not None and i % 1440 // 60 == batch_hour and i % 60 < 15
        counts.append(noisy(rng, mean * (8 if batch else 1)))
    return counts


def _ramp(rng: random.Random, mean: float) -> list[int]:
    """x1 -> x8 over 30 minutes, then 30 minutes at x8."""
    return [noisy(rng, mean * (1 + 7 * min(i, 30) / 30)) for i in range(60)]


def test_ramp_to_eight_times_fires_within_two_minutes_of_crossing(feeder: Callable[..., Feeder]) -> None:
    """A rate climbing from x1 to x8 over 30 minutes fires by the sustained rule within 120 s of the first
    minute at x5 (minute 18 of the ramp), not before the climb reached x4, and names the rule."""
    rng = random.Random(21)
    f = feeder(min_history_minutes=1440)
    start = T0 + 2 * DAY + 10 * HOUR
    assert f.run(T0, _flat_days(rng, 2, 20) + [noisy(rng, 20) for _ in range(600)]) == []
    [alert, *_] = f.run(start, _ramp(rng, 20))
    crossed = start + 18 * MINUTE  # noise may bring the first two minutes at x5 a little earlier
    assert -4 * MINUTE <= alert.time.timestamp() * 1000 - crossed <= 120_000
    assert alert.data.evidence["rule"] == "sustained"
    assert alert.data.evidence["sustained_threshold_per_minute"] == pytest.approx(100, abs=8)


def test_without_the_sustained_rule_the_ramp_is_the_boiling_frog(feeder: Callable[..., Feeder]) -> None:
    """The same ramp with sustained_ratio = 0 fires nothing: each minute raises the recent peak it is judged by."""
    rng = random.Random(21)
    f = feeder(min_history_minutes=1440, sustained_ratio=0)
    f.run(T0, _flat_days(rng, 2, 20) + [noisy(rng, 20) for _ in range(600)])
    assert f.run(T0 + 2 * DAY + 10 * HOUR, _ramp(rng, 20)) == []


def test_daily_batch_job_at_a_fixed_hour_stays_quiet(feeder: Callable[..., Feeder]) -> None:
    """x8 for 15 minutes at 10:00 UTC every day is learned by its hour: no alert on any day once armed."""
    rng = random.Random(22)
    f = feeder(min_history_minutes=1440)
    assert f.run(T0, _flat_days(rng, 4, 20, batch_hour=10)) == []


def test_deploy_bump_stays_quiet(feeder: Callable[..., Feeder]) -> None:
    """x1.6 for 10 minutes (a deploy) is far below both rules."""
    rng = random.Random(23)
    f = feeder(min_history_minutes=1440)
    f.run(T0, _flat_days(rng, 2, 40))
    assert f.run(T0 + 2 * DAY, [noisy(rng, 64) for _ in range(10)] + [noisy(rng, 40) for _ in range(30)]) == []


def test_single_busy_minutes_do_not_make_a_sustained_run(feeder: Callable[..., Feeder]) -> None:
    """x6 minutes every other minute never make two in a row, so only the per-minute rule could fire."""
    rng = random.Random(24)
    f = feeder(min_history_minutes=1440, peak_ratio=0, min_ratio=10, min_score=50)
    f.run(T0, _flat_days(rng, 2, 20))
    assert f.run(T0 + 2 * DAY, [120 if i % 2 == 0 else 20 for i in range(20)]) == []
    assert len(f.run(T0 + 2 * DAY + 20 * MINUTE, [160, 160, 160])) == 1
