"""Error burst: a cluster of 4xx answers of one kind, far above what the key normally gets.

Kinds: 401 credential_failure (stuffing, or a stale client after rotation/revocation), 403 scope_probing
(a valid key used outside its role), 404 enumeration (paths or ids), 429 throttling, other 4xx.
Counts are kept in one-minute buckets over a short rolling window; each kind opens its own episode.
The key's normal error ratio per kind (EWMA over minutes with traffic) is the baseline: a client that always
gets 20% 404s does not alert at 25%.

State (`KeyState.detectors["err"]`):
    m: newest minute   b: window buckets [total, 401, 403, 404, 429, other, new_paths]   w: their sums
    be: baseline errors per active minute by kind   bt: baseline requests per active minute   bn: active minutes
    p: {path: [count, last_minute]}, i: {ip: [count, last_minute]}: 4xx paths (query dropped) and IPs, capped
    ep: {kind: [start_minute, start_ms, peak, quiet_minutes, severity]} for open episodes
    x: late requests dropped
"""

from __future__ import annotations

from datetime import UTC, datetime
from operator import sub
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.alerts import Alert, Severity, alert_id
from keywatch.contract.events import RequestRecord
from keywatch.core.state import KeyState

NAME = "err"
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
    max_paths: int = Field(default=16, ge=1, le=256, description="4xx paths remembered per key (LRU).")
    max_ips: int = Field(default=16, ge=1, le=256, description="4xx client IPs remembered per key (LRU).")
    max_path_chars: int = Field(default=96, ge=8, le=2048, description="Paths are cut to this length in state.")
    top: int = Field(default=5, ge=1, le=50, description="Top paths and IPs shown in the evidence.")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat().replace("+00:00", "Z")


def _count(table: dict[str, list[int]], key: str, minute: int, cap: int) -> bool:
    """Count `key` seen at `minute`; evict the least recently seen beyond `cap`. True if it was new."""
    entry = table.get(key)
    if entry is not None:
        entry[0] += 1
        if minute > entry[1]:
            entry[1] = minute
        return False
    table[key] = [1, minute]
    if len(table) > cap:
        del table[min(table, key=lambda k: table[k][1])]
    return True


class ErrorBurst:
    """Alerts on a window of 4xx answers of one kind far above the key's baseline, one episode per kind."""

    name = NAME

    def __init__(self, config: ErrorBurstConfig, *, source: str) -> None:
        self.config = config
        self.source = source
        self._alpha = 1.0 - 0.5 ** (1.0 / config.baseline_half_life_minutes)
        self._warm = int(1.0 / self._alpha)  # minutes with traffic before the EWMA replaces the plain mean

    def on_request(self, state: KeyState, record: RequestRecord, ts_ms: int) -> list[Alert]:
        """Count the request in its minute; open an episode when a 4xx kind crosses the floors."""
        cfg = self.config
        if not cfg.enabled:
            return []
        minute = ts_ms // MINUTE_MS
        st: dict[str, Any] | None = state.detectors.get(NAME)
        if st is None:
            st = state.detectors[NAME] = {
                "m": minute,
                "b": [[0] * 7 for _ in range(cfg.window_minutes)],
                "w": [0] * 7,
                "be": [0.0] * 5,
                "bt": 0.0,
                "bn": 0,
                "p": {},
                "i": {},
            }
        alerts: list[Alert] = []
        if minute > st["m"]:
            self._advance(st, minute, record, alerts)
        idx = len(st["b"]) - 1 - (st["m"] - minute)
        if idx < 0:
            st["x"] = st.get("x", 0) + 1
            return alerts
        bucket, window = st["b"][idx], st["w"]
        bucket[0] += 1
        window[0] += 1
        status = record.status
        if status < 400 or status >= 500:
            return alerts
        kind = KIND_INDEX.get(status, OTHER)
        bucket[kind] += 1
        window[kind] += 1
        path = record.path.split("?", 1)[0][: cfg.max_path_chars]
        if _count(st["p"], path, minute, cfg.max_paths):
            bucket[NEW_PATHS] += 1
            window[NEW_PATHS] += 1
        _count(st["i"], record.ip, minute, cfg.max_ips)
        episodes = st.get("ep")
        code = KINDS[kind][0]
        if episodes is not None and code in episodes:
            if window[kind] > episodes[code][2]:
                episodes[code][2] = window[kind]
        elif window[kind] >= cfg.min_errors and self._bursting(st, kind):
            alerts.append(self._start(st, record, ts_ms, minute, kind))
        return alerts

    def baseline_ratio(self, st: dict[str, Any], kind: int) -> float:
        """The key's usual share of requests answered with `kind` (0 until enough history)."""
        if st["bn"] < self.config.baseline_min_minutes or st["bt"] <= 0:
            return 0.0
        return min(1.0, float(st["be"][kind - 1]) / float(st["bt"]))

    def _bursting(self, st: dict[str, Any], kind: int) -> bool:
        cfg = self.config
        window: list[int] = st["w"]
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

    def _advance(self, st: dict[str, Any], minute: int, record: RequestRecord, alerts: list[Alert]) -> None:
        """Roll the window forward to `minute`, folding minutes that leave it and ending calm episodes."""
        cfg = self.config
        # After the window has emptied and every episode had time to resolve, more steps change nothing.
        steps = min(minute - st["m"], cfg.window_minutes + cfg.resolve_minutes + 1)
        # Minute by minute only while an episode is open (each closed minute may end it); the rest in one go.
        while steps > 0 and st.get("ep"):
            self._step(st, record, alerts)
            steps -= 1
        if steps > 0:
            self._roll(st, steps)
        st["m"] = minute
        horizon = minute - cfg.window_minutes + 1
        for table in (st["p"], st["i"]):
            if table:
                for stale in [k for k, v in table.items() if v[1] < horizon]:
                    del table[stale]

    def _step(self, st: dict[str, Any], record: RequestRecord, alerts: list[Alert]) -> None:
        """Close one minute: it leaves the window (and shapes the baseline); open episodes may end."""
        self._roll(st, 1)
        episodes: dict[str, list[Any]] = st.get("ep") or {}
        for code in list(episodes):
            kind = KIND_OF_CODE[code]
            episode = episodes[code]
            episode[3] = 0 if self._bursting(st, kind) else episode[3] + 1
            if episode[3] >= self.config.resolve_minutes:
                alerts.append(self._end(st, record, kind))

    def _roll(self, st: dict[str, Any], steps: int) -> None:
        """Close `steps` minutes without looking at episodes: what `steps` single-minute steps do to the
        window and the baseline. Only the minutes that were in the window matter (the ones after it are empty
        and empty minutes do not shape the baseline), oldest first."""
        buckets: list[list[int]] = st["b"]
        leaving = min(steps, len(buckets))
        window: list[int] = st["w"]
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
        st["m"] += steps

    def _learn(self, st: dict[str, Any], minute: list[int]) -> None:
        """Fold one closed minute with traffic into the usual error share (rounded, as stored)."""
        n = st["bn"]
        a = self._alpha if n >= self._warm else 1.0 / (n + 1)
        st["bt"] = round(st["bt"] + a * (minute[0] - st["bt"]), 4)
        be = st["be"]
        # Bursts are learned too, slowly (half-life in the hours): a client that always errs like this
        # becomes its own baseline and its episode ends, while a short attack barely moves it.
        for i in range(5):
            count, usual = minute[i + 1], be[i]
            if count == 0 and usual == 0:
                be[i] = 0.0  # what the update below gives for 0 and 0, without the (slow) round
            else:
                be[i] = round(usual + a * (count - usual), 4)
        st["bn"] = n + 1

    def _summary(self, st: dict[str, Any], kind: int) -> dict[str, Any]:
        cfg = self.config
        window = st["w"]

        def top(table: dict[str, list[int]]) -> list[list[Any]]:
            return [[k, v[0]] for k, v in sorted(table.items(), key=lambda kv: -kv[1][0])[: cfg.top]]

        code, kind_name, _ = KINDS[kind]
        return {
            "kind": kind_name,
            "status": code,
            "counts": {KINDS[k][0]: window[k] for k in range(1, 6)},
            "errors": window[kind],
            "total": window[0],
            "ratio": round(window[kind] / window[0], 3) if window[0] else None,
            "baseline_ratio": round(self.baseline_ratio(st, kind), 3),
            "window_seconds": cfg.window_minutes * 60,
            "distinct_paths": window[NEW_PATHS],
            "top_paths": top(st["p"]),
            "top_ips": top(st["i"]),
        }

    def _episode_id(self, record: RequestRecord, code: str, start_minute: int) -> str:
        return alert_id(ALERT_TYPE, record.tenant, record.key_id, "episode", code, str(start_minute))

    def _start(self, st: dict[str, Any], record: RequestRecord, ts_ms: int, minute: int, kind: int) -> Alert:
        code, kind_name, severity = KINDS[kind]
        st.setdefault("ep", {})[code] = [minute, ts_ms, st["w"][kind], 0, severity]
        evidence = self._summary(st, kind)
        return Alert.about(
            record,
            type=ALERT_TYPE,
            id_parts=("firing", code, str(minute)),
            source=self.source,
            severity=severity,
            summary=(
                f"Key {record.key_id} got {evidence['errors']} {code} answers out of {evidence['total']} requests "
                f"in {self.config.window_minutes} min ({kind_name.replace('_', ' ')})."
            ),
            evidence=evidence,
            status="firing",
            episode_id=self._episode_id(record, code, minute),
        )

    def _end(self, st: dict[str, Any], record: RequestRecord, kind: int) -> Alert:
        code = KINDS[kind][0]
        episodes = st["ep"]
        start_minute, start_ms, peak, _, severity = episodes.pop(code)
        if not episodes:
            del st["ep"]
        end_ms = st["m"] * MINUTE_MS
        evidence = self._summary(st, kind)
        evidence.update(peak_errors=peak, started=_iso(start_ms), ended=_iso(end_ms))
        return Alert.about(
            record,
            type=ALERT_TYPE,
            id_parts=("resolved", code, str(start_minute)),
            source=self.source,
            time=datetime.fromtimestamp(end_ms / 1000.0, tz=UTC),
            severity=severity,
            summary=f"Cluster of {code} answers for key {record.key_id} is over (peak {peak} in the window).",
            evidence=evidence,
            status="resolved",
            episode_id=self._episode_id(record, code, start_minute),
        )
