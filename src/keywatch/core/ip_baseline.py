"""IP baseline: which network ranges (and ASNs, countries) a key is used from; alerts on a new one.

State: `IpState`, under `ip` (times in epoch seconds): the ranges, ASNs and countries seen, at most
`max_ranges` / `max_asns` / `max_countries`, each map evicting its least recently seen entry when full.
Suppression is the engine's, per range.
"""

from __future__ import annotations

import socket
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keywatch.contract.alerts import Severity
from keywatch.contract.events import RequestRecord
from keywatch.core.engine import Forward
from keywatch.core.registry import ROTATED
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState
from keywatch.core.suppression import is_suppressed, suppression_key
from keywatch.geo import UNKNOWN, GeoInfo, GeoLookup

NAME = "ip"
ALERT_TYPE = "apiKey.usedFromNewIp"
INHERIT = "inherit"  # forward kind: the replaced key's baseline, for the key that replaced it
SWEEP_EVERY_S = 3600
SUMMARY_TOP = 3


class RangeSeen(msgspec.Struct, array_like=True):
    """A network range the key was used from."""

    first_s: int
    last_s: int
    count: int
    asn: str | None
    country: str | None


class AsnSeen(msgspec.Struct, array_like=True):
    """An autonomous system the key was used from."""

    last_s: int
    count: int
    org: str | None


class CountrySeen(msgspec.Struct, array_like=True):
    """A country the key was used from."""

    last_s: int
    count: int


class IpState(msgspec.Struct, array_like=True):
    """A key's networks."""

    ranges: dict[str, RangeSeen]
    asns: dict[str, AsnSeen]
    countries: dict[str, CountrySeen]
    learned: bool = False  # the learning period is over
    swept_s: int = 0  # when entries unused for `forget_after_seconds` were last swept out


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


def _evict_lru(table: dict[str, Any], cap: int) -> None:
    """Drop the least recently seen entries beyond `cap`."""
    while len(table) > cap:
        del table[min(table, key=lambda k: table[k].last_s)]


class IpBaseline(Detector[IpState]):
    """Learns a key's ranges, ASNs and countries; finds the first request from a new range after learning."""

    def __init__(self, config: IpBaselineConfig, *, geo: GeoLookup | None = None) -> None:
        self.config = config
        self.geo = geo

    # -- state helpers -------------------------------------------------------------------------------------

    def _state(self, key: KeyState) -> IpState:
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = IpState({}, {}, {})
        return st

    def _learning_start_ms(self, key: KeyState, now_ms: int) -> int:
        reg = key.registry
        if reg.created_ms is not None:
            return reg.created_ms
        return reg.first_seen_ms if reg.first_seen_ms is not None else now_ms

    def _still_learning(self, key: KeyState, st: IpState, now_ms: int) -> bool:
        if st.learned:
            return False
        cfg = self.config
        elapsed_s = (now_ms - self._learning_start_ms(key, now_ms)) / 1000.0
        done = elapsed_s >= cfg.learning_max_seconds or (
            elapsed_s >= cfg.learning_seconds and key.registry.requests >= cfg.learning_requests
        )
        if done:
            st.learned = True
        return not done

    def _touch_geo(self, st: IpState, asn: str | None, country: str | None, org: str | None, t: int) -> None:
        if asn is not None:
            a = st.asns.get(asn)
            if a is None:
                st.asns[asn] = AsnSeen(t, 1, org)
                _evict_lru(st.asns, self.config.max_asns)
            else:
                if t > a.last_s:
                    a.last_s = t
                a.count += 1
        if country is not None:
            c = st.countries.get(country)
            if c is None:
                st.countries[country] = CountrySeen(t, 1)
                _evict_lru(st.countries, self.config.max_countries)
            else:
                if t > c.last_s:
                    c.last_s = t
                c.count += 1

    def _sweep(self, st: IpState, t: int) -> None:
        if t - st.swept_s < SWEEP_EVERY_S:
            return
        st.swept_s = t
        horizon = t - self.config.forget_after_seconds
        tables: tuple[dict[str, Any], ...] = (st.ranges, st.asns, st.countries)
        for table in tables:
            if table:
                for stale in [k for k, v in table.items() if v.last_s < horizon]:
                    del table[stale]

    # -- detection -----------------------------------------------------------------------------------------

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Learn the request's range; find it if it is new and the key is past learning."""
        cfg = self.config
        if not cfg.enabled:
            return None
        st = self._state(key)
        t = ts_ms // 1000
        ip = record.ip
        rk = range_of(ip, cfg.ipv4_prefix, cfg.ipv6_prefix)
        ranges = st.ranges
        entry = ranges.get(rk)
        self._sweep(st, t)
        if entry is not None:
            if t > entry.last_s:
                entry.last_s = t
            elif t < entry.first_s:
                entry.first_s = t
            entry.count += 1
            if entry.asn is not None or entry.country is not None:
                self._touch_geo(st, entry.asn, entry.country, None, t)
            return None

        geo = self.geo.lookup(ip, rk) if self.geo is not None else UNKNOWN
        asn = str(geo.asn) if geo.asn is not None else None
        known_asn = asn is not None and asn in st.asns
        new_asn = asn is not None and not known_asn and bool(st.asns)
        new_country = geo.country is not None and geo.country not in st.countries and bool(st.countries)
        # Whether this alerts does not depend on the maps: decided first, so the evidence of what was known
        # before is only gathered for an alert (most new ranges come while learning or suppressed).
        quiet = (
            self._still_learning(key, st, ts_ms)
            or not ranges
            or is_suppressed(key, suppression_key(ALERT_TYPE, rk), ts_ms)
        )
        summary_before = None if quiet else self._summary(st)
        ranges[rk] = RangeSeen(t, t, 1, asn, geo.country)
        _evict_lru(ranges, cfg.max_ranges)
        self._touch_geo(st, asn, geo.country, geo.org, t)
        if summary_before is None:
            return None
        return [self._finding(key, record, ts_ms, rk, geo, summary_before, new_asn, new_country, known_asn)]

    def _finding(
        self,
        key: KeyState,
        record: RequestRecord,
        ts_ms: int,
        rk: str,
        geo: GeoInfo,
        known: dict[str, Any],
        new_asn: bool,
        new_country: bool,
        known_asn: bool,
    ) -> Finding:
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
        start = self._learning_start_ms(key, ts_ms)
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
        return Finding(
            type=ALERT_TYPE,
            id_parts=(rk, str(ts_ms)),
            discriminator=rk,
            suppress_for_ms=self.config.suppress_seconds * 1000,
            severity=severity,
            summary=f"Key {record.key_id} was used from a new {what}: {record.ip} ({rk}).",
            evidence=evidence,
        )

    @staticmethod
    def _summary(st: IpState) -> dict[str, Any]:
        """Top known ranges/ASNs/countries by use, with totals (for the alert's evidence)."""

        def top(table: dict[str, Any]) -> list[list[Any]]:
            best = sorted(table.items(), key=lambda kv: -kv[1].count)[:SUMMARY_TOP]
            return [[k, v.count] for k, v in best]

        return {
            "ranges": len(st.ranges),
            "top_ranges": top(st.ranges),
            "asns": len(st.asns),
            "top_asns": [[a, n, st.asns[a].org] for a, n in top(st.asns)],
            "countries": len(st.countries),
            "top_countries": top(st.countries),
        }

    # -- rotation hand-off ---------------------------------------------------------------------------------

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """On `rotated`, send this key's baseline to its successor; on `inherit`, merge it and stop learning."""
        if forward.kind == ROTATED:
            st = self.state(key)
            if not st or not st.ranges:
                return None
            tables: dict[str, dict[str, Any]] = {"r": st.ranges, "a": st.asns, "c": st.countries}
            # The hand-off travels as JSON: each entry as the list of its fields.
            snapshot = {name: {k: list(msgspec.structs.astuple(v)) for k, v in t.items()} for name, t in tables.items()}
            return [
                Forward(
                    tenant=key.tenant,
                    key_id=str(forward.payload["replaced_by"]),
                    kind=INHERIT,
                    payload={"from": key.key_id, NAME: snapshot},
                    ts_ms=forward.ts_ms,
                )
            ]
        if forward.kind == INHERIT:
            inherited = forward.payload.get(NAME)
            if isinstance(inherited, dict) and inherited.get("r"):
                st = self._state(key)
                self.merge(st, inherited)
                st.learned = True
        return None

    def merge(self, st: IpState, other: dict[str, Any]) -> None:
        """Merge a handed-off baseline into `st` (min first seen, max last seen, summed counts), then apply the
        caps."""
        cfg = self.config
        for name, mine, make, cap in (
            ("r", st.ranges, RangeSeen, cfg.max_ranges),
            ("a", st.asns, AsnSeen, cfg.max_asns),
            ("c", st.countries, CountrySeen, cfg.max_countries),
        ):
            table: dict[str, Any] = mine
            for k, values in other.get(name, {}).items():
                theirs: Any = make(*values)
                cur: Any = table.get(k)
                if cur is None:
                    table[k] = theirs
                    continue
                if name == "r":
                    cur.first_s = min(cur.first_s, theirs.first_s)
                cur.last_s = max(cur.last_s, theirs.last_s)
                cur.count += theirs.count
            _evict_lru(table, cap)


def _build(config: IpBaselineConfig, context: BuildContext) -> IpBaseline:
    return IpBaseline(config, geo=context.geo)


SPEC: DetectorSpec[IpBaselineConfig, IpState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "medium"),),
    config=IpBaselineConfig,
    state=IpState,
    build=_build,
    summary=ALERT_TYPE,
)
