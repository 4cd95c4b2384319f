"""IP baseline: which network ranges (and ASNs, countries) a key is used from; alerts on a new one.

State (`KeyState.detectors["ip"]`), times in epoch seconds:
    r: {range: [first_s, last_s, count, asn | null, country | null]}   at most `max_ranges`
    a: {asn: [last_s, count, org | null]}                                at most `max_asns`
    c: {country: [last_s, count]}                                        at most `max_countries`
    L: 1 once the learning period is over (absent while learning)
    g: when entries unused for `forget_after_seconds` were last swept out
Every map evicts its least recently seen entry when full.
"""

from __future__ import annotations

import socket
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keywatch.contract.alerts import Alert, Severity
from keywatch.contract.events import RequestRecord
from keywatch.core.engine import Forward
from keywatch.core.registry import ROTATED
from keywatch.core.state import KeyState
from keywatch.core.suppression import DEFAULT_MAX_ENTRIES, is_suppressed, suppress, suppression_key
from keywatch.geo import UNKNOWN, GeoInfo, GeoLookup

NAME = "ip"
ALERT_TYPE = "apiKey.usedFromNewIp"
INHERIT = "inherit"  # forward kind: the replaced key's baseline, for the key that replaced it
SWEEP_EVERY_S = 3600
SUMMARY_TOP = 3


class IpBaselineConfig(BaseModel):
    """Settings of the new-IP detector (`[detection.ip]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    ipv4_prefix: int = Field(default=24, ge=8, le=32, description="IPv4 addresses are compared as /ipv4_prefix.")
    ipv6_prefix: int = Field(default=64, ge=16, le=128, description="IPv6 addresses are compared as /ipv6_prefix.")
    learning_seconds: int = Field(
        default=24 * 3600, ge=0, description="A new key learns silently for at least this long after creation."
    )
    learning_requests: int = Field(
        default=50, ge=0, description="... and until it has made at least this many requests."
    )
    learning_max_seconds: int = Field(
        default=7 * 24 * 3600, ge=0, description="Learning ends after this long even if learning_requests is not met."
    )
    forget_after_seconds: int = Field(
        default=30 * 24 * 3600, ge=3600, description="Ranges, ASNs and countries unused this long are forgotten."
    )
    suppress_seconds: int = Field(
        default=24 * 3600, ge=0, description="At most one alert per new range per this period."
    )
    max_ranges: int = Field(default=64, ge=1, le=4096, description="Ranges remembered per key (LRU).")
    max_asns: int = Field(default=16, ge=1, le=1024, description="ASNs remembered per key (LRU).")
    max_countries: int = Field(default=16, ge=1, le=256, description="Countries remembered per key (LRU).")
    severity_without_geo: Severity = Field(
        default="medium", description="Severity when the new range's ASN and country are unknown (no GeoIP data)."
    )

    @model_validator(mode="after")
    def _check_learning(self) -> IpBaselineConfig:
        if self.learning_max_seconds < self.learning_seconds:
            raise ValueError(
                f"learning_max_seconds ({self.learning_max_seconds}) must be >= learning_seconds "
                f"({self.learning_seconds})"
            )
        return self


def _v4_int_range(ip: str, prefix: int) -> str:
    value = int.from_bytes(socket.inet_aton(ip), "big")
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return f"{socket.inet_ntoa((value & mask).to_bytes(4, 'big'))}/{prefix}"


def range_of(ip: str, ipv4_prefix: int = 24, ipv6_prefix: int = 64) -> str:
    """The network range an (already normalised) address is compared as, e.g. `203.0.113.0/24`."""
    if ":" not in ip:
        if ipv4_prefix == 24:  # the common case, without any parsing
            return ip[: ip.rfind(".")] + ".0/24"
        return _v4_int_range(ip, ipv4_prefix)
    if ip.startswith("::ffff:") and "." in ip:  # IPv4-mapped: compare as the IPv4 address it is
        return range_of(ip[7:], ipv4_prefix, ipv6_prefix)
    value = int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
    mask = ((1 << 128) - 1) ^ ((1 << (128 - ipv6_prefix)) - 1)
    return f"{socket.inet_ntop(socket.AF_INET6, (value & mask).to_bytes(16, 'big'))}/{ipv6_prefix}"


def _evict_lru(table: dict[str, list[Any]], cap: int, last_at: int) -> None:
    """Drop the least recently seen entries (`last_at`: where an entry keeps its last-seen time) beyond `cap`."""
    while len(table) > cap:
        del table[min(table, key=lambda k: table[k][last_at])]


class IpBaseline:
    """Learns a key's ranges, ASNs and countries; alerts on the first request from a new range after learning."""

    name = NAME

    def __init__(
        self,
        config: IpBaselineConfig,
        *,
        source: str,
        geo: GeoLookup | None = None,
        max_suppressions: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.config = config
        self.max_suppressions = max_suppressions
        self.source = source
        self.geo = geo

    # -- state helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _state(state: KeyState) -> dict[str, Any]:
        st: dict[str, Any] | None = state.detectors.get(NAME)
        if st is None:
            st = state.detectors[NAME] = {"r": {}, "a": {}, "c": {}}
        return st

    def _learning_start_ms(self, state: KeyState, now_ms: int) -> int:
        reg = state.registry
        if reg.created_ms is not None:
            return reg.created_ms
        return reg.first_seen_ms if reg.first_seen_ms is not None else now_ms

    def _still_learning(self, state: KeyState, st: dict[str, Any], now_ms: int) -> bool:
        if st.get("L"):
            return False
        cfg = self.config
        elapsed_s = (now_ms - self._learning_start_ms(state, now_ms)) / 1000.0
        done = elapsed_s >= cfg.learning_max_seconds or (
            elapsed_s >= cfg.learning_seconds and state.registry.requests >= cfg.learning_requests
        )
        if done:
            st["L"] = 1
        return not done

    def _touch_geo(self, st: dict[str, Any], asn: str | None, country: str | None, org: str | None, t: int) -> None:
        if asn is not None:
            a = st["a"].get(asn)
            if a is None:
                st["a"][asn] = [t, 1, org]
                _evict_lru(st["a"], self.config.max_asns, 0)
            else:
                if t > a[0]:
                    a[0] = t
                a[1] += 1
        if country is not None:
            c = st["c"].get(country)
            if c is None:
                st["c"][country] = [t, 1]
                _evict_lru(st["c"], self.config.max_countries, 0)
            else:
                if t > c[0]:
                    c[0] = t
                c[1] += 1

    def _sweep(self, st: dict[str, Any], t: int) -> None:
        if t - st.get("g", 0) < SWEEP_EVERY_S:
            return
        st["g"] = t
        horizon = t - self.config.forget_after_seconds
        for key, pos in (("r", 1), ("a", 0), ("c", 0)):
            table = st[key]
            if table:
                for stale in [k for k, v in table.items() if v[pos] < horizon]:
                    del table[stale]

    # -- detection -----------------------------------------------------------------------------------------

    def on_request(self, state: KeyState, record: RequestRecord, ts_ms: int) -> list[Alert]:
        """Learn the request's range; alert if it is new and the key is past learning."""
        cfg = self.config
        if not cfg.enabled:
            return []
        st = self._state(state)
        t = ts_ms // 1000
        ip = record.ip
        rk = range_of(ip, cfg.ipv4_prefix, cfg.ipv6_prefix)
        ranges: dict[str, list[Any]] = st["r"]
        entry = ranges.get(rk)
        self._sweep(st, t)
        if entry is not None:
            if t > entry[1]:
                entry[1] = t
            elif t < entry[0]:
                entry[0] = t
            entry[2] += 1
            if entry[3] is not None or entry[4] is not None:
                self._touch_geo(st, entry[3], entry[4], None, t)
            return []

        geo = self.geo.lookup(ip, rk) if self.geo is not None else UNKNOWN
        asn = str(geo.asn) if geo.asn is not None else None
        known_asn = asn is not None and asn in st["a"]
        new_asn = asn is not None and not known_asn and bool(st["a"])
        new_country = geo.country is not None and geo.country not in st["c"] and bool(st["c"])
        # Whether this alerts does not depend on the maps: decided first, so the evidence of what was known
        # before is only gathered for an alert (most new ranges come while learning or suppressed).
        skey = suppression_key("nip", rk)
        quiet = self._still_learning(state, st, ts_ms) or not ranges or is_suppressed(state, skey, ts_ms)
        summary_before = None if quiet else self._summary(st)
        ranges[rk] = [t, t, 1, asn, geo.country]
        _evict_lru(ranges, cfg.max_ranges, 1)
        self._touch_geo(st, asn, geo.country, geo.org, t)
        if summary_before is None:
            return []
        suppress(
            state,
            skey,
            now_ms=ts_ms,
            until_ms=ts_ms + cfg.suppress_seconds * 1000,
            max_entries=self.max_suppressions,
        )
        return [self._alert(state, record, ts_ms, rk, geo, summary_before, new_asn, new_country, known_asn)]

    def _alert(
        self,
        state: KeyState,
        record: RequestRecord,
        ts_ms: int,
        rk: str,
        geo: GeoInfo,
        known: dict[str, Any],
        new_asn: bool,
        new_country: bool,
        known_asn: bool,
    ) -> Alert:
        severity: Severity
        if new_country:
            severity, what = "high", f"country ({geo.country})"
        elif new_asn:
            org = f" {geo.org}" if geo.org else ""
            severity, what = "medium", f"network (AS{geo.asn}{org})"
        elif known_asn:
            severity, what = "low", f"range in known network AS{geo.asn}"
        else:
            severity, what = self.config.severity_without_geo, "range"
        start = self._learning_start_ms(state, ts_ms)
        evidence = {
            "ip": record.ip,
            "range": rk,
            "asn": geo.asn,
            "org": geo.org,
            "country": geo.country,
            "new": {"range": True, "asn": new_asn, "country": new_country},
            "known": known,
            "key_known_for_seconds": round(max(0, ts_ms - start) / 1000.0, 3),
            "path": record.path,
        }
        return Alert.about(
            record,
            type=ALERT_TYPE,
            id_parts=(rk, str(ts_ms)),
            source=self.source,
            severity=severity,
            summary=f"Key {record.key_id} was used from a new {what}: {record.ip} ({rk}).",
            evidence=evidence,
        )

    @staticmethod
    def _summary(st: dict[str, Any]) -> dict[str, Any]:
        """Top known ranges/ASNs/countries by use, with totals (for the alert's evidence)."""

        def top(table: dict[str, list[Any]], count_at: int) -> list[list[Any]]:
            best = sorted(table.items(), key=lambda kv: -kv[1][count_at])[:SUMMARY_TOP]
            return [[k, v[count_at]] for k, v in best]

        return {
            "ranges": len(st["r"]),
            "top_ranges": top(st["r"], 2),
            "asns": len(st["a"]),
            "top_asns": [[a, n, st["a"][a][2]] for a, n in top(st["a"], 1)],
            "countries": len(st["c"]),
            "top_countries": top(st["c"], 1),
        }

    # -- rotation hand-off ---------------------------------------------------------------------------------

    def on_forward(self, state: KeyState, kind: str, payload: dict[str, Any], ts_ms: int) -> list[Forward]:
        """On `rotated`, send this key's baseline to its successor; on `inherit`, merge it and stop learning."""
        if kind == ROTATED:
            st = state.detectors.get(NAME)
            if not st or not st["r"]:
                return []
            snapshot = {key: {k: list(v) for k, v in st[key].items()} for key in ("r", "a", "c")}
            return [
                Forward(
                    tenant=state.tenant,
                    key_id=str(payload["replaced_by"]),
                    kind=INHERIT,
                    payload={"from": state.key_id, NAME: snapshot},
                    ts_ms=ts_ms,
                )
            ]
        if kind == INHERIT:
            inherited = payload.get(NAME)
            if isinstance(inherited, dict) and inherited.get("r"):
                self.merge(self._state(state), inherited)
                self._state(state)["L"] = 1
        return []

    def merge(self, st: dict[str, Any], other: dict[str, Any]) -> None:
        """Merge another baseline into `st` (min first seen, max last seen, summed counts), then apply the caps."""
        for key, last_at, count_at, cap in (
            ("r", 1, 2, self.config.max_ranges),
            ("a", 0, 1, self.config.max_asns),
            ("c", 0, 1, self.config.max_countries),
        ):
            mine: dict[str, list[Any]] = st[key]
            for k, theirs in other.get(key, {}).items():
                cur = mine.get(k)
                if cur is None:
                    mine[k] = list(theirs)
                    continue
                if key == "r":
                    cur[0] = min(cur[0], theirs[0])
                cur[last_at] = max(cur[last_at], theirs[last_at])
                cur[count_at] += theirs[count_at]
            _evict_lru(mine, cap, last_at)
