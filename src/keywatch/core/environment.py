"""Environment hygiene: sandbox and live keys on each other's hosts, and a learning key used from a network its
whole tenant never used.

Every key tells its tenant, with one forward per (range, UTC day), that it used the range that day (its env,
the range's network: ASN with GeoIP, else the IPv4 /16 or IPv6 /32). The tenant's state keeps a bounded range
registry: per range and environment, since when that environment uses it and when it last did, and the keys
seen there. The tenant answers a key with a forward when a rule holds; the key's side emits the alert.

- `apiKey.environmentMismatch` (this detector's type): a range belongs to the environment whose keys used it
  first (of the environments active there within `window_days`). A key of the other environment used from it is
  a mismatch: a sandbox key on a live range is a production service on a sandbox key (medium), a live key on a
  sandbox range is the production secret on test/CI hosts (high). Once per (key, range, UTC day), from the key's
  first request, learning or not; the alert's time is the key's first use of the range that day, its id names
  the key, the range and the day.
- `apiKey.usedFromNewIp` (the IP baseline's type, emitted here with an id of its own): while the key is still
  learning (the IP baseline's own learning period), a range new to the key from which no other key of the tenant
  made a request within `new_to_tenant_window_days`, in a network none of them used either, once the tenant has
  `tenant_history_hours` of history. Once per (key, network).

Monotone where it can be: a fact is judged against the facts of times at or before it, and whenever a fact
arrives every key of the range is judged again, so a mismatch is found whichever of its facts comes last (the
worker delivers forwards later and in another order than replay). Residual order sensitivity (docs/alerts.md):
"the range belongs to the environment that used it first" and "no other key used the network" are negations,
which a fact of an earlier time arriving later can change after the answer went out.

State: `EnvironmentState`, under `environment`; on a key only `reported` (range -> the last UTC day it was
reported, at most `MAX_REPORTED`); on the tenant the range registry (at most `max_ranges`, least recently used
first out; at most `max_keys_per_env` keys per range and environment) and the network registry (at most
`max_networks`, `MAX_KEYS_PER_NETWORK` keys each). A full registry drops a sixteenth of its cap at once, so a
tenant on more ranges than the cap pays one scan per sixteenth, not one per report.
"""

from __future__ import annotations

import heapq
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import RequestRecord, format_time
from keywatch.core.engine import Forward
from keywatch.core.ip_baseline import ALERT_TYPE as NEW_IP
from keywatch.core.ip_baseline import NAME as IP_NAME
from keywatch.core.ip_baseline import IpState, network_of, range_of
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState
from keywatch.core.trusted import TrustedNetworks
from keywatch.geo import UNKNOWN, GeoLookup

NAME = "environment"
ALERT_TYPE = "apiKey.environmentMismatch"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# Forward kinds
USED = "environment.used"  # key -> tenant: the key used a range on a UTC day
MISMATCH = "environment.mismatch"  # tenant -> key: the key is on a range of the other environment
NEW_TO_TENANT = "environment.new_to_tenant"  # tenant -> key: a learning key on a network new to the tenant

MAX_REPORTED = 16  # ranges per key whose report day is remembered (least recent day first out)
MAX_KEYS_PER_NETWORK = 4  # keys remembered per network of the tenant (least recently seen first out)
PATH_CHARS = 96
LEARNING = "learning"  # id part and discriminator prefix of the new-to-tenant usedFromNewIp alert
ENVS = ("live", "sandbox")


class KeySeen(msgspec.Struct, array_like=True, gc=False):
    """One key at one range of the tenant: its first report, its latest report day and its first use that day."""

    since_ms: int
    day: int
    at_ms: int
    flagged_day: int = -1  # the last day a mismatch was answered for it


class Presence(msgspec.Struct, array_like=True, gc=False):
    """One environment at one range: since when it has used the range (without a gap of the window) and when
    it last did, and the keys seen there."""

    since_ms: int
    at_ms: int
    keys: dict[str, KeySeen] = {}


class RangeUse(msgspec.Struct, array_like=True, gc=False):
    """A range of the tenant: its network and each environment's presence."""

    network: str
    live: Presence | None = None
    sandbox: Presence | None = None

    def presence(self, env: str) -> Presence | None:
        """The presence of `env` ("live" or "sandbox")."""
        return self.live if env == "live" else self.sandbox


class NetworkUse(msgspec.Struct, array_like=True, gc=False):
    """A network of the tenant: the keys seen there, key -> [since_ms, at_ms]."""

    keys: dict[str, list[int]] = {}


class EnvironmentState(msgspec.Struct, array_like=True, gc=False):
    """A key's reports (`reported`), or a tenant's registry (the other fields)."""

    reported: dict[str, int] = {}  # range -> the last UTC day (epoch days) reported to the tenant
    ranges: dict[str, RangeUse] = {}
    networks: dict[str, NetworkUse] = {}
    first_ms: int | None = None  # the tenant's first fact


class EnvironmentConfig(BaseModel):
    """Settings of the environment detector (`[detection.environment]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window_days: int = Field(
        default=30, ge=1, le=365, description="An environment's use of a range counts for this many days."
    )
    check_trusted: bool = Field(
        default=False,
        description="Also check ranges on a trusted list (shared infrastructure where both environments meet).",
    )
    max_ranges: int = Field(default=256, ge=8, le=4096, description="Ranges kept per tenant (least recently used out).")
    max_keys_per_env: int = Field(
        default=4, ge=1, le=64, description="Keys kept per range and environment (least recently seen out)."
    )
    max_networks: int = Field(
        default=64, ge=4, le=1024, description="Networks kept per tenant (least recently used out)."
    )
    new_to_tenant: bool = Field(
        default=True,
        description="A learning key used from a network no key of its tenant used raises apiKey.usedFromNewIp.",
    )
    new_to_tenant_window_days: int = Field(default=30, ge=1, le=365, description="... no key within this many days.")
    tenant_history_hours: int = Field(
        default=24, ge=0, description="... once the tenant's registry is at least this old (before: no history)."
    )


def _kind(network: str) -> str:
    """What a network can be compared with: ASNs with ASNs; without GeoIP, IPv4 prefixes with IPv4 ones and
    IPv6 prefixes with IPv6 ones (a tenant's first IPv6 use says nothing about its IPv4 history)."""
    if network.startswith("AS"):
        return "asn"
    return "v6" if ":" in network else "v4"


def _evict(table: dict[str, Any], cap: int, recency: Any, *, bulk: bool = False) -> None:
    """Beyond `cap`, drop the least recent entries (by `recency`, then name) down to `cap`, or with `bulk` down to
    `cap` less a sixteenth: a full registry then pays one scan per `cap // 16` new entries, not one per entry."""
    if len(table) <= cap:
        return
    keep = cap - max(1, cap // 16) if bulk else cap
    for name in heapq.nsmallest(len(table) - keep, table, key=lambda k: (recency(table[k]), k)):
        del table[name]


def _range_recency(entry: RangeUse) -> int:
    live, sandbox = entry.live, entry.sandbox
    if live is None:
        return sandbox.at_ms if sandbox is not None else -1
    return live.at_ms if sandbox is None or live.at_ms >= sandbox.at_ms else sandbox.at_ms


def _network_recency(entry: NetworkUse) -> int:
    return max([seen[1] for seen in entry.keys.values()], default=-1)


class Environment(Detector[EnvironmentState]):
    """Reports each key's ranges to its tenant once a day; the tenant answers mismatches and new networks."""

    def __init__(
        self, config: EnvironmentConfig, *, geo: GeoLookup | None = None, trusted: TrustedNetworks | None = None
    ) -> None:
        self.config = config
        self.geo = geo
        self.trusted = trusted if trusted is not None and trusted.lists else None
        self._window_ms = config.window_days * DAY_MS
        self._new_window_ms = config.new_to_tenant_window_days * DAY_MS
        self._enabled = config.enabled

    # -- the key's side ------------------------------------------------------------------------------------

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """The key's first use of a range on a UTC day (or a range new to a learning key): tell the tenant."""
        if not self._enabled:
            return None
        ip = record.ip
        rk = ip[: ip.rfind(".")] + ".0/24" if ":" not in ip else range_of(ip)  # range_of's fast path, inlined
        day = ts_ms // DAY_MS
        st: EnvironmentState | None = key.detectors.get(NAME)
        if st is not None:
            seen = st.reported.get(rk)
            if seen is not None and seen >= day:
                return None  # reported today (or a record late from yesterday: its day was reported)
        else:
            st = key.detectors[NAME] = EnvironmentState()
        st.reported[rk] = day
        if len(st.reported) > MAX_REPORTED:
            _evict(st.reported, MAX_REPORTED, lambda d: d)
        trusted = self.trusted is not None and self.trusted.list_of(record.ip, rk) is not None
        if trusted and not self.config.check_trusted:
            return None
        env = key.registry.env or record.env
        found = key.detectors.get(IP_NAME)
        ip_state = found if isinstance(found, IpState) else None
        seen_range = ip_state.ranges.get(rk) if ip_state is not None else None
        if ip_state is not None and seen_range is not None:
            asn, country = seen_range.asn, seen_range.country
            org = ip_state.asns[asn].org if asn is not None and asn in ip_state.asns else None
        else:
            geo = self.geo.lookup(record.ip, rk) if self.geo is not None else UNKNOWN
            asn = str(geo.asn) if geo.asn is not None else None
            country, org = geo.country, geo.org
        network = f"AS{asn}" if asn is not None else network_of(record.ip)
        payload: dict[str, Any] = {"key": key.key_id, "env": env, "range": rk, "network": network, "day": day}
        if (
            not trusted
            and self.config.new_to_tenant
            and ip_state is not None
            and seen_range is not None
            and seen_range.count == 1  # new to the key: this request brought it
            and (not ip_state.learned or len(ip_state.ranges) == 1)  # ... while the key learns
        ):
            first = key.registry.first_seen_ms
            payload["learning"] = {
                "ip": record.ip,
                "path": record.path.split("?", 1)[0][:PATH_CHARS],
                "asn": int(asn) if asn is not None and asn.isdigit() else None,
                "org": org,
                "country": country,
                "key_known_for_seconds": round(max(0, ts_ms - (first if first is not None else ts_ms)) / 1000.0, 3),
            }
        return [Forward.to_tenant(key.tenant, USED, payload, ts_ms)]

    def _on_key_forward(self, key: KeyState, forward: Forward) -> Effects:
        payload = forward.payload
        if forward.kind == MISMATCH:
            day = int(payload["day"])
            rk = str(payload["range"])
            live = payload["key_env"] == "live"
            ranged = "a sandbox range (test/CI hosts)" if live else "a live range (production hosts)"
            others = payload["other_keys"]
            named = ", ".join(f"{o['key_id']} ({o['env']})" for o in others[:3]) or "none kept"
            return [
                Finding(
                    type=ALERT_TYPE,
                    id_parts=(rk, f"d{day}"),
                    discriminator=rk,
                    severity="high" if live else "medium",
                    summary=(
                        f"{str(payload['key_env']).capitalize()} key {key.key_id} was used from {rk}, {ranged} "
                        f"used by {payload['range_env']} keys since {payload['range_env_since']}: {named}."
                    ),
                    evidence=dict(payload),
                )
            ]
        if forward.kind == NEW_TO_TENANT:
            net = str(payload["network"])
            window = self.config.new_to_tenant_window_days
            return [
                Finding(
                    type=NEW_IP,
                    id_parts=(LEARNING, net),
                    discriminator=f"{LEARNING}|{net}",
                    suppress_for_ms=self._new_window_ms,
                    severity="medium",
                    summary=(
                        f"Key {key.key_id}, still learning, was used from {payload['ip']} ({payload['range']}, "
                        f"network {net}): no key of {key.tenant} used that network in the last {window} days."
                    ),
                    evidence=dict(payload),
                )
            ]
        return None

    # -- the tenant's side ---------------------------------------------------------------------------------

    def on_forward(self, key: KeyState, forward: Forward) -> Effects:
        """On a key: a mismatch or new-network answer becomes its alert. On the tenant: a key's report."""
        if not key.is_tenant:
            return self._on_key_forward(key, forward)
        if forward.kind != USED or not self.config.enabled:
            return None
        p = forward.payload
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = EnvironmentState()
        key_id, env, rk, network = str(p["key"]), str(p["env"]), str(p["range"]), str(p["network"])
        if env not in ENVS:
            return None
        t, day = forward.ts_ms, int(p["day"])
        if st.first_ms is None or t < st.first_ms:
            st.first_ms = t
        out: list[Finding | Forward] = []
        learning = p.get("learning")
        if isinstance(learning, dict):
            answer = self._new_to_tenant(key, st, key_id, rk, network, t, learning)
            if answer is not None:
                out.append(answer)
        entry = self._record(st, key_id, env, rk, network, t, day)
        self._record_network(st, key_id, network, t)
        present = entry.presence(env)
        seen = present.keys.get(key_id) if present is not None else None
        if seen is not None and day < seen.day:  # a report older than the key's latest: judge its own day too
            answer = self._judge(key.tenant, entry, rk, key_id, env, (day, t))
            if answer is not None:
                out.append(answer)
        for other_env in ENVS:
            presence = entry.presence(other_env)
            if presence is None:
                continue
            for other in sorted(presence.keys):
                answer = self._judge(key.tenant, entry, rk, other, other_env)
                if answer is not None:
                    out.append(answer)
        return out or None

    def _record(self, st: EnvironmentState, key_id: str, env: str, rk: str, network: str, t: int, day: int) -> RangeUse:
        """Merge a report into the range registry (caps applied) and return the range's entry."""
        cfg = self.config
        entry = st.ranges.get(rk)
        if entry is None:
            entry = st.ranges[rk] = RangeUse(network)
        presence = entry.presence(env)
        if presence is None:
            presence = Presence(t, t, {})
            if env == "live":
                entry.live = presence
            else:
                entry.sandbox = presence
        elif t > presence.at_ms + self._window_ms:
            presence.since_ms = t  # unused for longer than the window: its use starts again
        else:
            presence.since_ms = min(presence.since_ms, t)
        presence.at_ms = max(presence.at_ms, t)
        seen = presence.keys.get(key_id)
        if seen is None:
            presence.keys[key_id] = KeySeen(t, day, t)
            _evict(presence.keys, cfg.max_keys_per_env, lambda s: s.at_ms)
        else:
            seen.since_ms = min(seen.since_ms, t)
            if day > seen.day:
                seen.day, seen.at_ms = day, t
            elif day == seen.day:
                seen.at_ms = min(seen.at_ms, t)
        if len(st.ranges) > cfg.max_ranges:
            _evict(st.ranges, cfg.max_ranges, _range_recency, bulk=True)
        return entry

    def _record_network(self, st: EnvironmentState, key_id: str, network: str, t: int) -> None:
        net = st.networks.get(network)
        if net is None:
            net = st.networks[network] = NetworkUse({})
        seen = net.keys.get(key_id)
        if seen is None:
            net.keys[key_id] = [t, t]
            _evict(net.keys, MAX_KEYS_PER_NETWORK, lambda s: s[1])
        else:
            seen[0], seen[1] = min(seen[0], t), max(seen[1], t)
        if len(st.networks) > self.config.max_networks:
            _evict(st.networks, self.config.max_networks, _network_recency, bulk=True)

    def _judge(
        self, tenant: str, entry: RangeUse, rk: str, key_id: str, env: str, older: tuple[int, int] | None = None
    ) -> Forward | None:
        """Whether the key's latest day at the range (or the `older` (day, time) it reported late) is a mismatch
        not answered yet: the answer, else None."""
        mine, theirs = entry.presence(env), entry.presence("sandbox" if env == "live" else "live")
        if mine is None or theirs is None:
            return None
        seen = mine.keys.get(key_id)
        if seen is None or (older is None and seen.flagged_day == seen.day):
            return None
        day, t = older if older is not None else (seen.day, seen.at_ms)
        if theirs.since_ms > t or theirs.at_ms < t - self._window_ms or theirs.since_ms >= mine.since_ms:
            return None  # the other environment was not there first (or not within the window)
        if older is None:
            seen.flagged_day = day
        others = sorted(theirs.keys.items(), key=lambda kv: (kv[1].since_ms, kv[0]))
        payload = {
            "range": rk,
            "network": entry.network,
            "key_env": env,
            "range_env": "sandbox" if env == "live" else "live",
            "range_env_since": format_time(theirs.since_ms),
            "range_env_last_seen": format_time(theirs.at_ms),
            "key_first_use_of_day": format_time(t),
            "key_since": format_time(seen.since_ms),
            "day": day,
            "other_keys": [
                {"key_id": k, "env": "sandbox" if env == "live" else "live", "since": format_time(s.since_ms)}
                for k, s in others
            ],
            "window_days": self.config.window_days,
        }
        return Forward(tenant, key_id, MISMATCH, payload, t)

    def _new_to_tenant(
        self,
        key: KeyState,
        st: EnvironmentState,
        key_id: str,
        rk: str,
        network: str,
        t: int,
        learning: dict[str, Any],
    ) -> Forward | None:
        """A learning key's new range: new to the tenant too (range and network unused by any other key within
        the window, and the tenant has history)? The answer, else None."""
        cfg = self.config
        if st.first_ms is None or t - st.first_ms < cfg.tenant_history_hours * HOUR_MS:
            return None
        horizon = t - self._new_window_ms

        def active(keys: dict[str, Any]) -> int:
            count = 0
            for k, seen in keys.items():
                since, at = (seen.since_ms, seen.at_ms) if isinstance(seen, KeySeen) else (seen[0], seen[1])
                if k != key_id and since <= t and at >= horizon:
                    count += 1
            return count

        entry = st.ranges.get(rk)
        if entry is not None and any(active(p.keys) for p in (entry.live, entry.sandbox) if p is not None):
            return None
        net = st.networks.get(network)
        if net is not None and active(net.keys):
            return None
        kind = _kind(network)
        known = sorted(
            ((n, active(u.keys)) for n, u in st.networks.items() if _kind(n) == kind), key=lambda x: (-x[1], x[0])
        )
        known = [(n, c) for n, c in known if c]
        if not known:
            return None  # nothing comparable known within the window: the tenant has no history to compare with
        ranges = sum(1 for e in st.ranges.values() if any(active(p.keys) for p in (e.live, e.sandbox) if p is not None))
        payload = {
            "phase": LEARNING,
            "new_to_tenant": True,
            "ip": learning.get("ip"),
            "range": rk,
            "network": network,
            "asn": learning.get("asn"),
            "org": learning.get("org"),
            "country": learning.get("country"),
            "new": {"range": True, "network_for_tenant": True},
            "known": {
                "tenant_ranges": ranges,
                "tenant_networks": len(known),
                "top_networks": [[n, c] for n, c in known[:3]],
                "window_days": cfg.new_to_tenant_window_days,
            },
            "key_known_for_seconds": learning.get("key_known_for_seconds"),
            "path": learning.get("path"),
        }
        return Forward(key.tenant, key_id, NEW_TO_TENANT, payload, t)


def _build(config: EnvironmentConfig, context: BuildContext) -> Environment:
    return Environment(config, geo=context.geo, trusted=context.trusted)


SPEC: DetectorSpec[EnvironmentConfig, EnvironmentState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "medium"),),
    config=EnvironmentConfig,
    state=EnvironmentState,
    build=_build,
    scope="both",
    summary=f"{ALERT_TYPE}; apiKey.usedFromNewIp of learning keys new to the tenant",
)
