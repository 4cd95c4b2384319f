"""IP baseline: which network ranges (and ASNs, countries) a key is used from; alerts on a new one.

State: `IpState`, under `ip` (times in epoch seconds): the ranges, ASNs and countries seen, at most
`max_ranges` / `max_asns` / `max_countries`, each map evicting its least recently seen entry when full; the
open episodes per network (at most `MAX_OPEN_NETWORKS`) and the networks new within the fan-out window (at
most `MAX_RECENT_NETWORKS`); the requests skipped per trusted list since the last alert (one counter per list).

Alerts fold: novelty is judged per range (an IPv4 /24), alerts are per network (the range's ASN with GeoIP,
else its IPv4 /16 or IPv6 /32). The first new range of a network opens an episode; later new ranges of the
network are counted into it; it resolves once the network has brought no new range for `fold_quiet_seconds`.
A key with `fanout_networks` new networks within `fanout_window_seconds` gets one "many-networks" alert
instead, and no per-network alert for `suppress_seconds`. Suppression is the engine's, per network.
"""

from __future__ import annotations

import socket
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keywatch.contract.alerts import Severity
from keywatch.contract.events import RequestRecord, format_time
from keywatch.core.engine import Forward
from keywatch.core.registry import ROTATED
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState
from keywatch.core.suppression import is_suppressed, suppression_key
from keywatch.core.trusted import TrustedNetworks
from keywatch.geo import UNKNOWN, GeoInfo, GeoLookup

NAME = "ip"
ALERT_TYPE = "apiKey.usedFromNewIp"
INHERIT = "inherit"  # forward kind: the replaced key's baseline, for the key that replaced it
SWEEP_EVERY_S = 3600
SUMMARY_TOP = 3
SAMPLE = 5  # ranges (networks) listed in an episode's (the fan-out's) evidence
MAX_OPEN_NETWORKS = 16  # open per-network episodes per key; a new network beyond it is learned silently
MAX_RECENT_NETWORKS = 32  # networks new within the fan-out window, per key (oldest dropped)
MANY_NETWORKS = "many-networks"  # discriminator of the fan-out alert


class RangeSeen(msgspec.Struct, array_like=True, gc=False):
    """A network range the key was used from."""

    first_s: int
    last_s: int
    count: int
    asn: str | None
    country: str | None


class AsnSeen(msgspec.Struct, array_like=True, gc=False):
    """An autonomous system the key was used from."""

    last_s: int
    count: int
    org: str | None


class CountrySeen(msgspec.Struct, array_like=True, gc=False):
    """A country the key was used from."""

    last_s: int
    count: int


class NetworkEpisode(msgspec.Struct, array_like=True, gc=False):
    """An open usedFromNewIp episode of one network: the new ranges counted into it."""

    first_s: int
    last_s: int  # when the network last brought a new range
    ranges: int
    sample: list[str]  # the first `SAMPLE` new ranges


class IpState(msgspec.Struct, array_like=True, gc=False):
    """A key's networks."""

    ranges: dict[str, RangeSeen]
    asns: dict[str, AsnSeen]
    countries: dict[str, CountrySeen]
    learned: bool = False  # the learning period is over
    swept_s: int = 0  # when entries unused for `forget_after_seconds` were last swept out
    open: dict[str, NetworkEpisode] = {}  # network -> its open episode
    recent: dict[str, int] = {}  # network -> when it brought its first new range within the fan-out window
    trusted: dict[str, int] = {}  # trusted list name -> requests from it since the last alert


class IpBaselineConfig(BaseModel):
    """Settings of the new-IP detector (`[detection.ip]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    ipv4_prefix: int = Field(default=24, ge=8, le=32, description="IPv4 addresses are compared as /ipv4_prefix.")
    ipv6_prefix: int = Field(default=64, ge=16, le=128, description="IPv6 addresses are compared as /ipv6_prefix.")
    learning_seconds: int = Field(
        default=24 * 3600,
        ge=0,
        description="A key learns silently for at least this long after the first request keywatch sees of it.",
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
    network_ipv4_prefix: int = Field(
        default=16, ge=8, le=32, description="Without an ASN, IPv4 ranges fold into networks of this prefix."
    )
    network_ipv6_prefix: int = Field(
        default=32, ge=16, le=128, description="Without an ASN, IPv6 ranges fold into networks of this prefix."
    )
    fold_quiet_seconds: int = Field(
        default=3600, ge=60, description="A network's episode resolves once it brought no new range for this long."
    )
    fanout_networks: int = Field(
        default=3, ge=2, le=MAX_RECENT_NETWORKS, description="This many new networks within the window: one alert."
    )
    fanout_window_seconds: int = Field(default=24 * 3600, ge=60, description="The window of `fanout_networks`.")

    @model_validator(mode="after")
    def _check_learning(self) -> IpBaselineConfig:
        if self.network_ipv4_prefix > self.ipv4_prefix or self.network_ipv6_prefix > self.ipv6_prefix:
            raise ValueError(
                f"network_ipv4_prefix/network_ipv6_prefix ({self.network_ipv4_prefix}/{self.network_ipv6_prefix}) "
                f"must be at most ipv4_prefix/ipv6_prefix ({self.ipv4_prefix}/{self.ipv6_prefix}): a network "
                "holds ranges"
            )
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


def network_of(ip: str, ipv4_prefix: int = 16, ipv6_prefix: int = 32) -> str:
    """The network a range folds into when its ASN is unknown, e.g. `203.0.0.0/16`."""
    return range_of(ip, ipv4_prefix, ipv6_prefix)


def _evict_oldest(table: dict[str, int], cap: int) -> None:
    while len(table) > cap:
        del table[min(table, key=lambda k: (table[k], k))]


def _evict_lru(table: dict[str, Any], cap: int) -> None:
    """Drop the least recently seen entries beyond `cap`."""
    while len(table) > cap:
        del table[min(table, key=lambda k: table[k].last_s)]


class IpBaseline(Detector[IpState]):
    """Learns a key's ranges, ASNs and countries; finds the first request from a new range after learning."""

    def __init__(
        self, config: IpBaselineConfig, *, geo: GeoLookup | None = None, trusted: TrustedNetworks | None = None
    ) -> None:
        self.config = config
        self.geo = geo
        self.trusted = trusted if trusted is not None and trusted.lists else None

    # -- state helpers -------------------------------------------------------------------------------------

    def _state(self, key: KeyState) -> IpState:
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = IpState({}, {}, {})
        return st

    @staticmethod
    def _learning_start_ms(key: KeyState, now_ms: int) -> int:
        # The first request keywatch saw, whatever the key's age: a key created long before its traffic reached
        # keywatch (a backfilled audit log, state evicted by the key cap) has no baseline yet either.
        first = key.registry.first_seen_ms
        return first if first is not None else now_ms

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

        if self.trusted is not None:
            listed = self.trusted.list_of(ip, rk)
            if listed is not None:  # known to every key of the tenant: counted, never learned
                st.trusted[listed] = st.trusted.get(listed, 0) + 1
                return None
        geo = self.geo.lookup(ip, rk) if self.geo is not None else UNKNOWN
        asn = str(geo.asn) if geo.asn is not None else None
        known_asn = asn is not None and asn in st.asns
        new_asn = asn is not None and not known_asn and bool(st.asns)
        new_country = geo.country is not None and geo.country not in st.countries and bool(st.countries)
        learning = self._still_learning(key, st, ts_ms) or not ranges
        found: Finding | None = None
        if not learning:
            net = f"AS{asn}" if asn is not None else network_of(ip, cfg.network_ipv4_prefix, cfg.network_ipv6_prefix)
            episode = st.open.get(net)
            if episode is not None:  # folded into the network's open episode
                episode.ranges += 1
                episode.last_s = max(episode.last_s, t)
                if len(episode.sample) < SAMPLE:
                    episode.sample.append(rk)
                key.ask_tick(NAME, (episode.last_s + cfg.fold_quiet_seconds) * 1000)
            else:
                found = self._new_network(key, st, record, ts_ms, rk, net, geo, new_asn, new_country, known_asn)
        ranges[rk] = RangeSeen(t, t, 1, asn, geo.country)
        _evict_lru(ranges, cfg.max_ranges)
        self._touch_geo(st, asn, geo.country, geo.org, t)
        return None if found is None else [found]

    def _new_network(
        self,
        key: KeyState,
        st: IpState,
        record: RequestRecord,
        ts_ms: int,
        rk: str,
        net: str,
        geo: GeoInfo,
        new_asn: bool,
        new_country: bool,
        known_asn: bool,
    ) -> Finding | None:
        """A new range from a network without an open episode: the network's alert, the fan-out alert, or
        nothing (suppressed); decided before the evidence is gathered (most new ranges are quiet)."""
        cfg = self.config
        t = ts_ms // 1000
        recent = st.recent
        horizon = t - cfg.fanout_window_seconds
        for old in [n for n, since in recent.items() if since <= horizon]:
            del recent[old]
        if net not in recent:
            recent[net] = t
            _evict_oldest(recent, MAX_RECENT_NETWORKS)
        if is_suppressed(key, suppression_key(ALERT_TYPE, MANY_NETWORKS), ts_ms):
            return None
        fanout = len(recent) >= cfg.fanout_networks
        if not fanout and (
            len(st.open) >= MAX_OPEN_NETWORKS or is_suppressed(key, suppression_key(ALERT_TYPE, net), ts_ms)
        ):
            return None
        finding = self._finding(key, record, ts_ms, rk, net, geo, self._summary(st), new_asn, new_country, known_asn)
        if st.trusted:
            finding.evidence["trusted"] = dict(st.trusted)
            st.trusted.clear()
        if fanout:
            networks = sorted(recent, key=lambda n: (recent[n], n))
            finding.discriminator = MANY_NETWORKS
            finding.id_parts = (MANY_NETWORKS, self._window(ts_ms))
            if finding.severity in ("low", "info"):
                finding.severity = "medium"
            finding.summary = (
                f"Key {record.key_id} was used from {len(networks)} new networks within "
                f"{cfg.fanout_window_seconds // 3600 or 1} h (the latest: {record.ip}, {net}): one alert for all of "
                f"them, none per network for {cfg.suppress_seconds // 3600} h."
            )
            finding.evidence["networks"] = {
                "count": len(networks),
                "sample": networks[-SAMPLE:],
                "window_seconds": cfg.fanout_window_seconds,
            }
            return finding
        st.open[net] = NetworkEpisode(t, t, 1, [rk])
        key.ask_tick(NAME, (t + cfg.fold_quiet_seconds) * 1000)
        finding.episode = "open"
        return finding

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """Resolve the episodes of networks that brought no new range for `fold_quiet_seconds`."""
        st = self.state(key)
        if not st or not st.open:
            return None
        quiet = self.config.fold_quiet_seconds
        out: list[Finding | Forward] = []
        for net in sorted(st.open, key=lambda n: (st.open[n].last_s, n)):
            episode = st.open[net]
            due_ms = (episode.last_s + quiet) * 1000
            if due_ms > now_ms:
                continue
            del st.open[net]
            out.append(
                Finding(
                    type=ALERT_TYPE,
                    discriminator=net,
                    episode="close",
                    time_ms=due_ms,
                    summary=(
                        f"Key {key.key_id}: network {net} brought {episode.ranges} new range(s); none for "
                        f"{quiet // 60} min."
                    ),
                    evidence={
                        "network": net,
                        "new_ranges": episode.ranges,
                        "sample_ranges": list(episode.sample),
                        "first_seen": format_time(episode.first_s * 1000),
                        "last_seen": format_time(episode.last_s * 1000),
                    },
                )
            )
        if st.open:
            key.ask_tick(NAME, (min(e.last_s for e in st.open.values()) + quiet) * 1000)
        return out or None

    def _window(self, ts_ms: int) -> str:
        """The id part of the time: the suppression window the alert fires in, not the request's own time. A
        network alerts at most once per window, so ids stay distinct; and whichever request of the network comes
        first (records arrive out of order), the worker and replay give the alert the same id."""
        window_ms = self.config.suppress_seconds * 1000
        return f"w{ts_ms // window_ms}" if window_ms else str(ts_ms)  # no suppression: every request may alert

    def _finding(
        self,
        key: KeyState,
        record: RequestRecord,
        ts_ms: int,
        rk: str,
        net: str,
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
            "network": net,
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
            id_parts=(net, self._window(ts_ms)),
            discriminator=net,
            suppress_for_ms=self.config.suppress_seconds * 1000,
            severity=severity,
            summary=f"Key {record.key_id} was used from a new {what}: {record.ip} ({rk}, network {net}).",
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
    return IpBaseline(config, geo=context.geo, trusted=context.trusted)


SPEC: DetectorSpec[IpBaselineConfig, IpState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "medium"),),
    config=IpBaselineConfig,
    state=IpState,
    build=_build,
    summary=ALERT_TYPE,
)
