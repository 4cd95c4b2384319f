"""Rate baseline: requests per minute against what the key normally does at this time of day.

Requests answered with a 4xx are not counted here: error bursts are the 4xx-cluster detector's, so one
credential-stuffing run raises one alert of the right type, not a spike as well.

The baseline is a long-run level and spread (EWMA of the minute count and of its absolute deviation, a plain
mean while young) plus, once `profile_min_days` of history exist, 24 hour-of-day (UTC) levels and spreads, so a
normal daily peak is expected. Every minute counts, including the ones without requests: a key that goes
quiet and comes back has the gap folded in as zero minutes (in closed form, however long the gap).

Detection runs on the current minute as requests arrive: once its count reaches the threshold computed when
the minute opened, the episode starts (status firing). A second rule finds what climbs slowly (a ramp, a
runaway rollout): the sustained rule fires when `sustained_minutes` consecutive minutes, the current one at
its pace so far, are each at `sustained_ratio` x the hour-of-day level (at least `min_per_minute`). It
ignores the recent peak and the spread, which a slow climb raises with itself (the boiling frog); a daily
batch job at the same hour is in its hour's level, a short deploy bump is far below the ratio. Minutes at
or above the sustained threshold while a run of them lasts enter the baseline clipped at it and never raise
the recent peak (a single busy minute, a cron burst, still does). An episode ends (status resolved, same
episode_id) after `resolve_minutes` consecutive closed minutes below the threshold (the lower of the two
while a sustained run lasts). This detector asks for no ticks: a key that stops completely resolves on its
next request.

Late requests are counted into their minute while it is among the last `late_minutes` minutes; minutes are
folded into the baseline only when they leave that window, so late and skewed producers are counted
before the baseline sees the minute. Older requests are dropped from rate accounting (and counted).

State: `RateState`, under `rate`.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.alerts import Severity
from keywatch.contract.events import RequestRecord, format_time
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "rate"
ALERT_TYPE = "apiKey.requestSpike"
MINUTE_MS = 60_000
SIGMA_PER_MAD = 1.25  # mean absolute deviation -> standard deviation, for roughly normal counts


class RateEpisode(msgspec.Struct, array_like=True, gc=False):
    """An open spike."""

    start_minute: int
    start_ms: int
    peak: int
    quiet_minutes: int
    threshold: int
    severity: Severity


# Fields typed `int | float` hold an int while the baseline is a single count (the first minute, an hour's
# first minute), as the arithmetic leaves it: the wire keeps which, so evidence reads the same after a reload.
class RateState(msgspec.Struct, array_like=True, gc=False):
    """A key's per-minute counts and baseline."""

    minute: int  # newest minute (epoch minutes)
    first_minute: int  # first minute seen
    counts: list[int]  # counts of minutes minute-late_minutes .. minute
    level: int | float  # long-run level, spread and minutes of history
    spread: int | float
    minutes: int
    hour_level: list[int | float]  # 24 hour-of-day levels, spreads, update counts
    hour_spread: list[int | float]
    hour_updates: list[int]
    expected: int | float  # expected rate, spread and threshold for `minute` (threshold None until armed)
    expected_spread: int | float
    threshold: int | None
    peak: int | float = 0.0  # recent peak minute (decaying max of closed minutes below the threshold)
    episode: RateEpisode | None = None
    late_dropped: int = 0  # late requests dropped from rate accounting
    sustained_threshold: int | None = None  # sustained-rule threshold for `minute` (None until armed or when off)
    sustained_run: int = 0  # consecutive closed minutes up to `minute` - 1 at or above their sustained threshold
    reference: int | float = 0.0  # the sustained rule's level: this hour's level as it was when the hour began
    reference_hour: int = -1  # the epoch hour `reference` was taken in


class RateBaselineConfig(BaseModel):
    """Settings of the request-spike detector (`[detection.rate]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_per_minute: int = Field(default=60, ge=1, description="Never alert below this many requests in a minute.")
    min_ratio: float = Field(default=3.0, ge=1.0, description="... nor below this multiple of the expected rate.")
    min_score: float = Field(
        default=6.0, gt=0, description="... nor below expected + min_score x spread (spread >= sqrt(expected), >= 1)."
    )
    high_ratio: float = Field(default=20.0, ge=1.0, description="Severity is high from this multiple on.")
    min_history_minutes: int = Field(
        default=1440,
        ge=1,
        description="Minutes of baseline (quiet ones included) before the detector is armed: a day, so a key's "
        "first working morning is not a spike.",
    )
    level_half_life_minutes: float = Field(default=240.0, gt=0, description="Half-life of the long-run level.")
    profile_half_life_days: float = Field(default=7.0, gt=0, description="Half-life of each hour-of-day level.")
    profile_min_days: float = Field(
        default=1.0, ge=0, description="History needed before the hour-of-day profile is used."
    )
    peak_ratio: float = Field(
        default=2.0,
        ge=0,
        description="... nor below this multiple of the key's recent peak minute (recurring batch jobs); 0 = off.",
    )
    peak_half_life_minutes: float = Field(
        default=1440.0, gt=0, description="Half-life of the recent peak minute, in minutes."
    )
    sustained_ratio: float = Field(
        default=5.0,
        ge=0,
        description="Sustained rule: minutes at this multiple of the hour-of-day level (the long-run level "
        "before the profile is used) fire however slowly they were reached; 0 = off.",
    )
    sustained_minutes: int = Field(
        default=2,
        ge=1,
        le=60,
        description="... for this many consecutive minutes, the last being the current one at its pace so far.",
    )
    sustained_pace_seconds: float = Field(
        default=15.0,
        ge=1,
        le=60,
        description="The current minute's pace (requests per minute so far) is judged after at least this long.",
    )
    resolve_minutes: int = Field(
        default=5, ge=1, description="An episode ends after this many consecutive minutes below the threshold."
    )
    late_minutes: int = Field(
        default=5, ge=0, le=60, description="Late or skewed requests up to this many minutes old are still counted."
    )


def _alpha(half_life_updates: float) -> float:
    return 1.0 - float(0.5 ** (1.0 / half_life_updates))


def fold(level: float, dev: float, n: int, x: float, k: int, alpha: float) -> tuple[float, float, int]:
    """Fold `k` minutes of value `x` into (level, spread, updates): a plain mean while young, then an EWMA.

    Repeated values are folded in closed form; the spread's deviation is taken against the level before the
    run, so a long quiet run keeps the memory of how far the key used to be from zero (conservative on return).
    """
    if k <= 0:
        return level, dev, n
    if n == 0:
        level, dev, n, k = x, 0.0, 1, k - 1
    warm = int(1.0 / alpha)
    if k > 0 and n < warm:
        j = min(k, warm - n)
        dev = (dev * n + j * abs(x - level)) / (n + j)
        level = (level * n + x * j) / (n + j)
        n, k = n + j, k - j
    if k > 0:
        keep = (1.0 - alpha) ** k
        dev = keep * dev + (1.0 - keep) * abs(x - level)
        level = keep * level + (1.0 - keep) * x
        n += k
    return level, dev, n


def minutes_per_hour(first_minute: int, count: int) -> list[int]:
    """How many of `count` consecutive minutes from `first_minute` fall in each UTC hour of the day."""
    days, rest = divmod(count, 1440)
    out = [60 * days] * 24
    minute = first_minute
    while rest > 0:
        chunk = min(rest, 60 - minute % 60)
        out[(minute // 60) % 24] += chunk
        minute += chunk
        rest -= chunk
    return out


def hours_touched(first_minute: int, count: int) -> dict[int, int]:
    """`minutes_per_hour` without the hours that get no minute: {UTC hour of the day: minutes}."""
    days, rest = divmod(count, 1440)
    out = dict.fromkeys(range(24), 60 * days) if days else {}
    minute = first_minute
    while rest > 0:
        chunk = min(rest, 60 - minute % 60)
        slot = (minute // 60) % 24
        out[slot] = out.get(slot, 0) + chunk
        minute += chunk
        rest -= chunk
    return out


def _iso_minute(minute: int) -> str:
    return format_time(minute * 60_000)


class RateBaseline(Detector[RateState]):
    """Finds spikes: a key's request rate far above its learned, time-of-day aware baseline."""

    def __init__(self, config: RateBaselineConfig) -> None:
        self.config = config
        self._ring = config.late_minutes + 1
        self._alpha = _alpha(config.level_half_life_minutes)
        self._profile_alpha = _alpha(config.profile_half_life_days * 60)
        self._profile_min = int(config.profile_min_days * 1440)
        self._peak_keep = float(0.5 ** (1.0 / config.peak_half_life_minutes))
        # `fold` for one minute (k = 1), worked out once: a minute roll-over runs it up to `late_minutes` + 1
        # times per request. Same float operations as `fold`, so the same bits.
        self._warm = int(1.0 / self._alpha)
        self._keep1 = (1.0 - self._alpha) ** 1
        self._gain1 = 1.0 - self._keep1
        self._profile_warm = int(1.0 / self._profile_alpha)
        self._profile_keep1 = (1.0 - self._profile_alpha) ** 1
        self._profile_gain1 = 1.0 - self._profile_keep1
        self._pace_ms = int(config.sustained_pace_seconds * 1000)

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Count the request in its minute; open an episode when the minute crosses the threshold."""
        if not self.config.enabled or 400 <= record.status < 500:
            # Client errors are the 4xx-cluster detector's: a credential-stuffing burst is one alert, not two.
            return None
        minute = ts_ms // MINUTE_MS
        st = self.state(key)
        findings: list[Finding | Any] = []
        if st is None:
            st = key.detectors[NAME] = self._new(minute)
        m = st.minute
        b = st.counts
        if minute == m:
            b[-1] += 1
            count = b[-1]
        elif minute > m:
            self._advance(st, minute, record, findings)
            b = st.counts
            b[-1] = 1
            count = 1
        else:
            idx = len(b) - 1 - (m - minute)
            if idx < 0:
                st.late_dropped += 1
                return findings
            if minute < st.first_minute:
                st.first_minute = minute
            b[idx] += 1
            count = b[idx]
        threshold = st.threshold
        episode = st.episode
        if episode is not None:
            if count > episode.peak:
                episode.peak = count
        elif threshold is not None and count >= threshold:
            findings.append(self._start(st, record, ts_ms, minute, count))
        elif minute == st.minute and self._sustained(st, count, ts_ms - minute * MINUTE_MS):
            findings.append(self._start(st, record, ts_ms, minute, count, rule="sustained"))
        return findings

    def _sustained(self, st: RateState, count: int, elapsed_ms: int) -> bool:
        """The sustained rule for the current minute: the minutes before it were at the multiple, and this one
        is on pace for it (judged after `sustained_pace_seconds`)."""
        threshold = st.sustained_threshold
        if threshold is None or st.sustained_run < self.config.sustained_minutes - 1:
            return False
        elapsed = min(MINUTE_MS, max(elapsed_ms + 1, self._pace_ms))
        return count * MINUTE_MS >= threshold * elapsed

    def _close_sustained(self, st: RateState, minute: int) -> None:
        """Count the closing minute into the run of minutes at the sustained threshold (a gap ends the run)."""
        threshold = st.sustained_threshold
        if threshold is not None and minute == st.minute + 1 and st.counts[-1] >= threshold:
            st.sustained_run += 1
        else:
            st.sustained_run = 0

    def _cap(self, st: RateState) -> int | None:
        """What a closing minute enters the baseline clipped at, and must stay below to raise the peak: the
        threshold, and the sustained threshold while a run of minutes at it lasts (a single busy minute, a cron
        burst, is the recent peak's to learn)."""
        cap = st.threshold
        sustained = st.sustained_threshold
        if sustained is not None and st.sustained_run >= max(2, self.config.sustained_minutes):
            cap = sustained if cap is None else min(cap, sustained)
        return cap

    def calm_threshold(self, st: RateState, episode: RateEpisode) -> int:
        """A closed minute below this is calm for an open episode."""
        cap = self._cap(st)
        return cap if cap is not None else episode.threshold

    def _arm_sustained(self, st: RateState, minute: int) -> None:
        """The sustained rule's threshold for `minute`: the multiple of the hour's own level once the profile is
        used (the long-run level before), never below `min_per_minute`. The level is taken when the hour begins
        and held for the hour, so the first minutes of a climb, learned as they close, do not raise the bar the
        rest of the climb is judged by."""
        cfg = self.config
        if cfg.sustained_ratio <= 0 or st.minutes < cfg.min_history_minutes:
            st.sustained_threshold = None
            return
        hour = minute // 60
        if hour != st.reference_hour:
            st.reference_hour = hour
            st.reference = st.hour_level[hour % 24] if st.minutes >= self._profile_min else st.level
        st.sustained_threshold = math.ceil(max(cfg.min_per_minute, cfg.sustained_ratio * st.reference))

    # -- baseline ------------------------------------------------------------------------------------------

    def _new(self, minute: int) -> RateState:
        return RateState(
            minute=minute,
            first_minute=minute,
            counts=[0] * self._ring,
            level=0.0,
            spread=0.0,
            minutes=0,
            hour_level=[0.0] * 24,
            hour_spread=[0.0] * 24,
            hour_updates=[0] * 24,
            expected=0.0,
            expected_spread=1.0,
            threshold=None,
        )

    def _fold_quiet(self, st: RateState, first_minute: int, k: int) -> None:
        """Fold `k` > 1 minutes without requests from `first_minute` on: the level in closed form, then each hour."""
        st.level, st.spread, st.minutes = fold(st.level, st.spread, st.minutes, 0.0, k, self._alpha)
        h, hd, hn = st.hour_level, st.hour_spread, st.hour_updates
        # Rounded where they change (not all 48 on every minute): the state stays short on the changelog.
        for slot, j in hours_touched(first_minute, k).items():
            if hn[slot] == 0 or (h[slot] == 0 and hd[slot] == 0):
                # Quiet minutes leave an hour that is new or all zero at exactly 0.0 (what `fold` computes).
                h[slot], hd[slot], hn[slot] = 0.0, 0.0, hn[slot] + j
                continue
            level, dev, hn[slot] = fold(h[slot], hd[slot], hn[slot], 0.0, j, self._profile_alpha)
            h[slot], hd[slot] = round(level, 3), round(dev, 3)

    def _fold_each(self, st: RateState, first_minute: int, counts: list[float]) -> None:
        """Fold consecutive minutes from `first_minute` one by one into the level and their hours: `fold` for
        k = 1 written out (same float operations, so the same bits), the hours rounded as stored."""
        level, dev, n = st.level, st.spread, st.minutes
        h = st.hour_level
        hd = st.hour_spread
        hn = st.hour_updates
        warm, keep, gain = self._warm, self._keep1, self._gain1
        hour_warm, hour_keep, hour_gain = self._profile_warm, self._profile_keep1, self._profile_gain1
        minute = first_minute
        for x in counts:
            if n == 0:
                level, dev = x, 0.0
            elif n < warm:
                level, dev = (level * n + x) / (n + 1), (dev * n + abs(x - level)) / (n + 1)
            else:
                level, dev = keep * level + gain * x, keep * dev + gain * abs(x - level)
            n += 1
            slot = (minute // 60) % 24
            minute += 1
            seen = hn[slot]
            hn[slot] = seen + 1
            if seen == 0:
                h[slot], hd[slot] = round(x, 3), 0.0
            elif x == 0 and h[slot] == 0 and hd[slot] == 0:
                h[slot], hd[slot] = 0.0, 0.0  # a quiet minute in a quiet hour: what the update gives, cheaply
            else:
                was = h[slot]
                if seen < hour_warm:
                    h[slot] = round((was * seen + x) / (seen + 1), 3)
                    hd[slot] = round((hd[slot] * seen + abs(x - was)) / (seen + 1), 3)
                else:
                    h[slot] = round(hour_keep * was + hour_gain * x, 3)
                    hd[slot] = round(hour_keep * hd[slot] + hour_gain * abs(x - was), 3)
        st.level, st.spread, st.minutes = level, dev, n

    def _advance(self, st: RateState, minute: int, record: RequestRecord, findings: list[Any]) -> None:
        """Close minutes up to `minute`: end an episode if calm long enough, fold minutes leaving the window."""
        m = st.minute
        b = st.counts
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
        cap = self._cap(st)  # spike minutes enter the baseline clipped at the threshold, so an attack is not learned
        ring = len(b)
        shift = minute - m
        leaving = min(shift, ring)
        first = m - ring + 1
        start = min(max(0, st.first_minute - first), leaving)  # minutes before the key's first request are not history
        closing = b[start:leaving]  # counts of the minutes that leave the ring, oldest first
        counts: list[float] = [c if cap is None or c <= cap else cap for c in closing]
        quiet = shift - ring  # minutes after the ring that closed without a request
        if quiet == 1:  # right after the ring's minutes: one more of the same loop
            counts.append(0.0)
        if counts:
            self._fold_each(st, first + start, counts)
        if quiet > 1:
            self._fold_quiet(st, m + 1, quiet)
        peak = st.peak
        keep = self._peak_keep
        for count in closing:
            # A recurring burst (an hourly batch job) is normal for this key; a minute at or over the
            # threshold is an episode's, and must not raise the bar for the next one.
            peak *= keep
            if (cap is None or count < cap) and count > peak:
                peak = float(count)
        if quiet > 0:
            peak *= keep**quiet
        st.peak = round(peak, 2)
        del b[:leaving]  # in place: a new list per roll-over would be garbage for the collector to chase
        b.extend([0] * leaving)
        st.minute = minute
        self._arm(st, minute)

    def _arm(self, st: RateState, minute: int) -> None:
        """Expected rate, spread and threshold for `minute`."""
        cfg = self.config
        level, spread = st.level, st.spread
        expected = level
        if st.minutes >= self._profile_min:
            slot = (minute // 60) % 24
            h = st.hour_level
            # Neighbouring hours too: daily peaks drift by an hour with DST and with the clients' own clocks.
            expected = max(expected, h[slot - 1], h[slot], h[(slot + 1) % 24])
            # The long-run spread includes the daily swing itself; the hour's own spread is the noise.
            hd = st.hour_spread
            spread = max(hd[slot - 1], hd[slot], hd[(slot + 1) % 24])
        spread = max(spread * SIGMA_PER_MAD, math.sqrt(expected), 1.0)
        rounded = round(level, 3)
        st.level, st.spread = rounded, round(st.spread, 3)
        st.expected = rounded if expected is level else round(expected, 3)  # one round fewer when it is the level
        st.expected_spread = round(spread, 3)
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

    # -- episodes ------------------------------------------------------------------------------------------

    def _start(
        self, st: RateState, record: RequestRecord, ts_ms: int, minute: int, count: int, rule: str = "minute"
    ) -> Finding:
        expected, spread = st.expected, st.expected_spread
        ratio = round(count / expected, 2) if expected > 0 else None
        severity: Severity = "high" if ratio is None or ratio >= self.config.high_ratio else "medium"
        threshold = st.threshold if rule == "minute" else st.sustained_threshold
        assert threshold is not None  # only an armed minute starts an episode
        st.episode = RateEpisode(minute, ts_ms, count, 0, threshold, severity)
        if rule == "minute":
            text = f"against {expected:.1f} expected."
        else:
            text = (
                f"{self.config.sustained_minutes} minutes in a row at >= {threshold}/min "
                f"(x{self.config.sustained_ratio:g} the usual level for this hour): a sustained rise."
            )
        return Finding(
            type=ALERT_TYPE,
            episode="open",
            id_parts=(str(minute),),
            severity=severity,
            summary=(f"Key {record.key_id} made {count} requests in the minute from {_iso_minute(minute)}, {text}"),
            evidence={
                "observed_per_minute": count,
                "expected_per_minute": expected,
                "ratio": ratio,
                "score": round((count - expected) / spread, 2),
                "threshold_per_minute": threshold,
                "rule": rule,
                "sustained_threshold_per_minute": st.sustained_threshold,
                "sustained_minutes": st.sustained_run + 1 if rule == "sustained" else None,
                "recent_peak_per_minute": st.peak,
                "baseline_minutes": st.minutes,
                "hour_profile_used": st.minutes >= self._profile_min,
                "minute": _iso_minute(minute),
            },
        )

    def _end(self, st: RateState, record: RequestRecord, *, end_minute: int) -> Finding:
        episode = st.episode
        assert episode is not None
        st.episode = None
        end_ms = end_minute * MINUTE_MS
        return Finding(
            type=ALERT_TYPE,
            episode="close",
            time_ms=end_ms,
            severity=episode.severity,
            summary=(
                f"Request spike of key {record.key_id} is over: the rate has been below {episode.threshold}/min "
                f"for {self.config.resolve_minutes} minutes (peak {episode.peak}/min)."
            ),
            evidence={
                "peak_per_minute": episode.peak,
                "expected_per_minute": st.expected,
                "threshold_per_minute": episode.threshold,
                "started": format_time(episode.start_ms),
                "ended": _iso_minute(end_minute),
                "duration_seconds": round((end_ms - episode.start_ms) / 1000.0, 3),
                "baseline_minutes": st.minutes,
            },
        )


def _build(config: RateBaselineConfig, context: BuildContext) -> RateBaseline:
    return RateBaseline(config)


SPEC: DetectorSpec[RateBaselineConfig, RateState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "medium"),),
    config=RateBaselineConfig,
    state=RateState,
    build=_build,
    summary=ALERT_TYPE,
)
