"""Error burst: a cluster of 4xx answers of one kind, far above what the key normally gets.

Kinds: 401 credential_failure (stuffing, or a stale client after rotation/revocation), 403 scope_probing
(a valid key used outside its role), 404 enumeration (paths or ids), 429 throttling, other 4xx.
Counts are kept in one-minute buckets over a short rolling window; each kind opens its own episode.
The key's normal error ratio per kind (EWMA over minutes with traffic) is the baseline: a client that always
gets 20% 404s does not alert at 25%.

Two rules open an episode, checked on every 4xx as it arrives (so a burst is found inside its first minute):
- surprise: the errors of the kind in the last `surprise_minutes` buckets (the current minute and the ones
  before it) are improbable given the requests of those minutes and the key's learned share of the kind
  (binomial upper tail below `surprise_p_value`, with at least `surprise_min_errors` errors). The learned
  share starts from a prior (`prior_ratio`, weighted as `prior_requests` requests) so a new key is judged too,
  and never goes below `min_learned_ratio`, so a kind a key never saw is not infinitely surprising. It applies
  once `surprise_min_minutes` minutes with traffic have been learned.
- share (the original rule, kept for long, diluted bursts): over the whole window, at least `min_errors`
  errors making at least `min_ratio` of all requests, well above the usual share.

State: `ErrorBurstState`, under `errors`.
"""

from __future__ import annotations

import math
from operator import sub
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.alerts import Severity
from keywatch.contract.events import RequestRecord, format_time
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "errors"
ALERT_TYPE = "apiKey.4xxCluster"
MINUTE_MS = 60_000

# Bucket layout: 0 = all requests, 1..5 = the kinds, 6 = new distinct 4xx paths.
KIND_INDEX = {401: 1, 403: 2, 404: 3, 429: 4}
OTHER = 5
NEW_PATHS = 6
EMPTY_BUCKET = (0,) * 7
KINDS: dict[int, tuple[str, str, Severity]] = {
    1: ("401", "credential_failure", "medium"),
    2: ("403", "scope_probing", "high"),
    3: ("404", "enumeration", "medium"),
    4: ("429", "throttling", "low"),
    5: ("other_4xx", "other", "low"),
}
KIND_OF_CODE = {code: kind for kind, (code, _, _) in KINDS.items()}


class Seen(msgspec.Struct, array_like=True, gc=False):
    """A 4xx path or client IP: how often, and the last minute it was seen."""

    count: int
    last_minute: int


class ErrorEpisode(msgspec.Struct, array_like=True, gc=False):
    """An open cluster of one kind."""

    start_minute: int
    start_ms: int
    peak: int
    quiet_minutes: int
    severity: Severity


class ErrorBurstState(msgspec.Struct, array_like=True, gc=False):
    """A key's recent 4xx answers and its usual share of each kind."""

    minute: int  # newest minute
    buckets: list[list[int]]  # the window's minutes, oldest first, each [total, 401, 403, 404, 429, other, new paths]
    window: list[int]  # their sums
    usual_errors: list[float]  # baseline errors per active minute, by kind
    usual_total: float  # baseline requests per active minute
    active_minutes: int
    paths: dict[str, Seen]  # 4xx paths (query dropped), capped
    ips: dict[str, Seen]  # 4xx client IPs, capped
    episodes: dict[str, ErrorEpisode] = {}  # open episodes by status code ("401", ..., "other_4xx")
    late_dropped: int = 0


class ErrorBurstConfig(BaseModel):
    """Settings of the 4xx-cluster detector (`[detection.errors]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window_minutes: int = Field(default=5, ge=1, le=60, description="Errors are counted over this many minutes.")
    min_errors: int = Field(default=20, ge=1, description="Never alert below this many errors of one kind.")
    min_ratio: float = Field(default=0.5, gt=0, le=1, description="... nor below this share of all requests.")
    baseline_multiplier: float = Field(
        default=3.0, ge=1, description="... nor below this multiple of the key's usual share of that kind."
    )
    min_ratio_above_baseline: float = Field(
        default=0.25, ge=0, le=1, description="... nor less than this far above the usual share."
    )
    baseline_half_life_minutes: float = Field(
        default=1440.0, gt=0, description="Half-life of the usual error share, in minutes with traffic."
    )
    baseline_min_minutes: int = Field(
        default=30, ge=0, description="Minutes with traffic before the usual share is used (0 is assumed before)."
    )
    resolve_minutes: int = Field(
        default=5, ge=1, description="An episode ends after this many consecutive minutes below the floors."
    )
    surprise: bool = Field(default=True, description="Also open an episode on a surprising last minute or two.")
    surprise_minutes: int = Field(
        default=2,
        ge=1,
        le=60,
        description="Buckets the surprise is judged over: the current minute and the ones before it "
        "(at most window_minutes).",
    )
    surprise_p_value: float = Field(
        default=1e-6, gt=0, lt=1, description="Fire when the binomial upper tail of the errors is below this."
    )
    surprise_min_errors: int = Field(
        default=8, ge=1, description="... and at least this many errors of the kind are in those buckets."
    )
    surprise_min_minutes: int = Field(
        default=10,
        ge=0,
        description="Minutes with traffic learned before the surprise rule applies (the share rule covers a "
        "brand-new key).",
    )
    prior_ratio: float = Field(
        default=0.02, gt=0, lt=1, description="Share of each kind assumed for a key without history."
    )
    prior_requests: float = Field(
        default=200.0, ge=0, description="Weight of that prior, in requests, against the key's learned minutes."
    )
    min_learned_ratio: float = Field(
        default=0.001, gt=0, lt=1, description="The learned share of a kind is never taken below this."
    )
    max_paths: int = Field(default=16, ge=1, le=256, description="4xx paths remembered per key (LRU).")
    max_ips: int = Field(default=16, ge=1, le=256, description="4xx client IPs remembered per key (LRU).")
    max_path_chars: int = Field(default=96, ge=8, le=2048, description="Paths are cut to this length in state.")
    top: int = Field(default=5, ge=1, le=50, description="Top paths and IPs shown in the evidence.")


def binomial_log_tail(errors: int, requests: int, p: float) -> float:
    """log P(X >= errors) for X ~ Binomial(requests, p); 0.0 (probability 1) when `errors` is not above the
    mean, where only "not surprising" matters."""
    if errors <= 0 or errors <= requests * p:
        return 0.0
    if errors > requests:
        return -math.inf
    k, n = errors, requests
    log_first = (
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
    )
    # The terms after the first fall geometrically above the mean: sum until they no longer matter.
    odds = p / (1.0 - p)
    term, total = 1.0, 1.0
    for j in range(k, min(n, k + 400)):
        term *= (n - j) / (j + 1) * odds
        total += term
        if term < 1e-12 * total:
            break
    return min(0.0, log_first + math.log(total))


def _iso(ms: int) -> str:
    return format_time(ms)


def _count(table: dict[str, Seen], key: str, minute: int, cap: int) -> bool:
    """Count `key` seen at `minute`; evict the least recently seen beyond `cap`. True if it was new."""
    entry = table.get(key)
    if entry is not None:
        entry.count += 1
        if minute > entry.last_minute:
            entry.last_minute = minute
        return False
    table[key] = Seen(1, minute)
    if len(table) > cap:
        del table[min(table, key=lambda k: table[k].last_minute)]
    return True


class ErrorBurst(Detector[ErrorBurstState]):
    """Finds a window of 4xx answers of one kind far above the key's baseline, one episode per kind."""

    def __init__(self, config: ErrorBurstConfig) -> None:
        self.config = config
        self._alpha = 1.0 - 0.5 ** (1.0 / config.baseline_half_life_minutes)
        self._warm = int(1.0 / self._alpha)  # minutes with traffic before the EWMA replaces the plain mean
        self._surprise_minutes = min(config.surprise_minutes, config.window_minutes)
        self._log_p_value = math.log(config.surprise_p_value)

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Count the request in its minute; open an episode when a 4xx kind crosses the floors."""
        cfg = self.config
        if not cfg.enabled:
            return None
        minute = ts_ms // MINUTE_MS
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = ErrorBurstState(
                minute=minute,
                buckets=[[0] * 7 for _ in range(cfg.window_minutes)],
                window=[0] * 7,
                usual_errors=[0.0] * 5,
                usual_total=0.0,
                active_minutes=0,
                paths={},
                ips={},
            )
        findings: list[Any] = []
        if minute > st.minute:
            self._advance(st, minute, record, findings)
        idx = len(st.buckets) - 1 - (st.minute - minute)
        if idx < 0:
            st.late_dropped += 1
            return findings
        bucket, window = st.buckets[idx], st.window
        bucket[0] += 1
        window[0] += 1
        status = record.status
        if status < 400 or status >= 500:
            return findings
        kind = KIND_INDEX.get(status, OTHER)
        bucket[kind] += 1
        window[kind] += 1
        path = record.path.split("?", 1)[0][: cfg.max_path_chars]
        if _count(st.paths, path, minute, cfg.max_paths):
            bucket[NEW_PATHS] += 1
            window[NEW_PATHS] += 1
        _count(st.ips, record.ip, minute, cfg.max_ips)
        episodes = st.episodes
        code = KINDS[kind][0]
        if code in episodes:
            if window[kind] > episodes[code].peak:
                episodes[code].peak = window[kind]
        elif (window[kind] >= cfg.min_errors and self._bursting(st, kind)) or self._surprising(st, kind):
            findings.append(self._start(st, record, ts_ms, minute, kind))
        return findings

    def learned_ratio(self, st: ErrorBurstState, kind: int) -> float:
        """The key's share of requests answered with `kind`, for the surprise rule: the learned EWMA blended
        with the prior (weighted as `prior_requests` requests), floored at `min_learned_ratio`."""
        cfg = self.config
        minutes = min(st.active_minutes, self._warm)
        requests = st.usual_total * minutes
        errors = st.usual_errors[kind - 1] * minutes
        weight = cfg.prior_requests
        blended = (errors + cfg.prior_ratio * weight) / (requests + weight) if requests + weight > 0 else 0.0
        return min(0.999, max(cfg.min_learned_ratio, blended))

    def recent(self, st: ErrorBurstState, kind: int) -> tuple[int, int]:
        """Errors of `kind` and all requests in the last `surprise_minutes` buckets."""
        errors = total = 0
        for bucket in st.buckets[-self._surprise_minutes :]:
            errors += bucket[kind]
            total += bucket[0]
        return errors, total

    def _surprising(self, st: ErrorBurstState, kind: int) -> bool:
        cfg = self.config
        if not cfg.surprise or st.active_minutes < cfg.surprise_min_minutes:
            return False
        errors, total = self.recent(st, kind)
        if errors < cfg.surprise_min_errors:
            return False
        return binomial_log_tail(errors, total, self.learned_ratio(st, kind)) < self._log_p_value

    def holds(self, st: ErrorBurstState, kind: int) -> bool:
        """True while either rule sees a burst of `kind` (an open episode is not calm)."""
        return self._bursting(st, kind) or self._surprising(st, kind)

    def baseline_ratio(self, st: ErrorBurstState, kind: int) -> float:
        """The key's usual share of requests answered with `kind` (0 until enough history)."""
        if st.active_minutes < self.config.baseline_min_minutes or st.usual_total <= 0:
            return 0.0
        return min(1.0, float(st.usual_errors[kind - 1]) / float(st.usual_total))

    def _bursting(self, st: ErrorBurstState, kind: int) -> bool:
        cfg = self.config
        window = st.window
        errors, total = window[kind], window[0]
        if errors < cfg.min_errors or total <= 0:
            return False
        ratio = errors / total
        base = self.baseline_ratio(st, kind)
        return (
            ratio >= cfg.min_ratio
            and ratio >= base * cfg.baseline_multiplier
            and ratio - base >= cfg.min_ratio_above_baseline
        )

    def _advance(self, st: ErrorBurstState, minute: int, record: RequestRecord, findings: list[Any]) -> None:
        """Roll the window forward to `minute`, folding minutes that leave it and ending calm episodes."""
        cfg = self.config
        # After the window has emptied and every episode had time to resolve, more steps change nothing.
        steps = min(minute - st.minute, cfg.window_minutes + cfg.resolve_minutes + 1)
        # Minute by minute only while an episode is open (each closed minute may end it); the rest in one go.
        while steps > 0 and st.episodes:
            self._step(st, record, findings)
            steps -= 1
        if steps > 0:
            self._roll(st, steps)
        st.minute = minute
        horizon = minute - cfg.window_minutes + 1
        for table in (st.paths, st.ips):
            if table:
                for stale in [k for k, v in table.items() if v.last_minute < horizon]:
                    del table[stale]

    def _step(self, st: ErrorBurstState, record: RequestRecord, findings: list[Any]) -> None:
        """Close one minute: it leaves the window (and shapes the baseline); open episodes may end."""
        self._roll(st, 1)
        episodes = st.episodes
        for code in list(episodes):
            kind = KIND_OF_CODE[code]
            episode = episodes[code]
            episode.quiet_minutes = 0 if self.holds(st, kind) else episode.quiet_minutes + 1
            if episode.quiet_minutes >= self.config.resolve_minutes:
                findings.append(self._end(st, record, kind))

    def _roll(self, st: ErrorBurstState, steps: int) -> None:
        """Close `steps` minutes without looking at episodes: what `steps` single-minute steps do to the
        window and the baseline. Only the minutes that were in the window matter (the ones after it are empty
        and empty minutes do not shape the baseline), oldest first."""
        buckets = st.buckets
        leaving = min(steps, len(buckets))
        window = st.window
        for oldest in buckets[:leaving]:
            if oldest[0] > 0:  # only minutes with traffic shape the usual error share
                window[:] = map(sub, window, oldest)
                self._learn(st, oldest)
                oldest[:] = EMPTY_BUCKET  # reused as one of the new minutes: no garbage per roll-over
            elif any(oldest):
                window[:] = map(sub, window, oldest)
                oldest[:] = EMPTY_BUCKET
        if leaving < len(buckets):  # (when every bucket leaves, all are empty now: order does not matter)
            buckets.extend(buckets[:leaving])
            del buckets[:leaving]
        st.minute += steps

    def _learn(self, st: ErrorBurstState, minute: list[int]) -> None:
        """Fold one closed minute with traffic into the usual error share (rounded, as stored)."""
        n = st.active_minutes
        a = self._alpha if n >= self._warm else 1.0 / (n + 1)
        st.usual_total = round(st.usual_total + a * (minute[0] - st.usual_total), 4)
        be = st.usual_errors
        # Bursts are learned too, slowly (half-life in the hours): a client that always errs like this
        # becomes its own baseline and its episode ends, while a short attack barely moves it.
        for i in range(5):
            count, usual = minute[i + 1], be[i]
            if count == 0 and usual == 0:
                be[i] = 0.0  # what the update below gives for 0 and 0, without the (slow) round
            else:
                be[i] = round(usual + a * (count - usual), 4)
        st.active_minutes = n + 1

    def _summary(self, st: ErrorBurstState, kind: int) -> dict[str, Any]:
        cfg = self.config
        window = st.window

        def top(table: dict[str, Seen]) -> list[list[Any]]:
            return [[k, v.count] for k, v in sorted(table.items(), key=lambda kv: -kv[1].count)[: cfg.top]]

        code, kind_name, _ = KINDS[kind]
        recent_errors, recent_total = self.recent(st, kind)
        learned = self.learned_ratio(st, kind)
        log_tail = binomial_log_tail(recent_errors, recent_total, learned)
        return {
            "kind": kind_name,
            "status": code,
            "counts": {KINDS[k][0]: window[k] for k in range(1, 6)},
            "errors": window[kind],
            "total": window[0],
            "ratio": round(window[kind] / window[0], 3) if window[0] else None,
            "baseline_ratio": round(self.baseline_ratio(st, kind), 3),
            "window_seconds": cfg.window_minutes * 60,
            "recent_errors": recent_errors,
            "recent_total": recent_total,
            "recent_seconds": self._surprise_minutes * 60,
            "learned_ratio": round(learned, 5),
            "expected_errors": round(learned * recent_total, 2),
            "p_value": float(f"{math.exp(log_tail):.3g}"),
            "surprise": round(-log_tail / math.log(10), 1) + 0.0,  # + 0.0: no "-0.0" for a tail of 1
            "distinct_paths": window[NEW_PATHS],
            "top_paths": top(st.paths),
            "top_ips": top(st.ips),
        }

    def _start(self, st: ErrorBurstState, record: RequestRecord, ts_ms: int, minute: int, kind: int) -> Finding:
        code, _, severity = KINDS[kind]
        st.episodes[code] = ErrorEpisode(minute, ts_ms, st.window[kind], 0, severity)
        evidence = {"rule": "share" if self._bursting(st, kind) else "surprise", **self._summary(st, kind)}
        return Finding(
            type=ALERT_TYPE,
            episode="open",
            discriminator=code,
            id_parts=(code, str(minute)),
            severity=severity,
            summary=self._start_summary(record, evidence),
            evidence=evidence,
        )

    def _start_summary(self, record: RequestRecord, evidence: dict[str, Any]) -> str:
        code, what = evidence["status"], evidence["kind"].replace("_", " ")
        if evidence["rule"] == "share":
            return (
                f"Key {record.key_id} got {evidence['errors']} {code} answers out of {evidence['total']} requests "
                f"in {self.config.window_minutes} min ({what})."
            )
        return (
            f"Key {record.key_id} got {evidence['recent_errors']} {code} answers out of {evidence['recent_total']} "
            f"requests in the last {self._surprise_minutes} min, against {evidence['expected_errors']} expected "
            f"(p = {evidence['p_value']:.2g}; {what})."
        )

    def _end(self, st: ErrorBurstState, record: RequestRecord, kind: int) -> Finding:
        code = KINDS[kind][0]
        episode = st.episodes.pop(code)
        end_ms = st.minute * MINUTE_MS
        evidence = self._summary(st, kind)
        evidence.update(peak_errors=episode.peak, started=_iso(episode.start_ms), ended=_iso(end_ms))
        return Finding(
            type=ALERT_TYPE,
            episode="close",
            discriminator=code,
            time_ms=end_ms,
            severity=episode.severity,
            summary=f"Cluster of {code} answers for key {record.key_id} is over (peak {episode.peak} in the window).",
            evidence=evidence,
        )


def _build(config: ErrorBurstConfig, context: BuildContext) -> ErrorBurst:
    return ErrorBurst(config)


SPEC: DetectorSpec[ErrorBurstConfig, ErrorBurstState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "medium"),),
    config=ErrorBurstConfig,
    state=ErrorBurstState,
    build=_build,
    summary=ALERT_TYPE,
)
