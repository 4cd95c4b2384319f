"""The scenario plan: tenants, keys, their hosts and traffic profiles, lifecycle events, benign changes
and labelled incidents, all drawn from one seed.

The plan is small (hundreds of objects); the millions of request records are produced from it lazily by
`keywatch.sim.generator`. Incidents that consist of a handful of records are materialised here, so their
labels carry the exact time of their first and last record.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from keywatch.core import (
    browser,
    environment,
    error_burst,
    ip_baseline,
    key_management,
    lifecycle_burst,
    portal,
    privilege,
    rate_baseline,
    revocation_impact,
    revoked_use,
    rotation,
    rotation_age,
    sharing,
    unused,
)
from keywatch.core.roles import default_rank

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday

# The incident types, as their detectors declare them (keywatch.core.catalog lists every detector).
NEW_IP = ip_baseline.SPEC.alerts[0].type
ERROR_CLUSTER = error_burst.SPEC.alerts[0].type
SPIKE = rate_baseline.SPEC.alerts[0].type
AFTER_REVOKE = revoked_use.SPEC.alerts[0].type
FROM_BROWSER = browser.SPEC.alerts[0].type
KEY_MANAGEMENT = key_management.SPEC.alerts[0].type
PRIVILEGE = privilege.SPEC.alerts[0].type
OUTSIDE_PORTAL = portal.SPEC.alerts[0].type
LIFECYCLE_BURST = lifecycle_burst.SPEC.alerts[0].type
ROTATION_OVERDUE = rotation_age.SPEC.alerts[0].type
UNUSED = unused.SPEC.alerts[0].type
ROTATION_STALLED = rotation.SPEC.alerts[0].type
REVOKED_IN_USE = revocation_impact.SPEC.alerts[0].type
ENV_MISMATCH = environment.SPEC.alerts[0].type
SHARED = sharing.SPEC.alerts[0].type
# The types the default plan injects itself (one schedule slot each); situations label the others.
PLANNED_TYPES: tuple[str, ...] = (NEW_IP, ERROR_CLUSTER, SPIKE, AFTER_REVOKE)
# Every scored type (keywatch.sim.evaluate): the planned ones and the key hygiene types of the situations.
INCIDENT_TYPES: tuple[str, ...] = (
    *PLANNED_TYPES,
    FROM_BROWSER,
    KEY_MANAGEMENT,
    PRIVILEGE,
    OUTSIDE_PORTAL,
    LIFECYCLE_BURST,
    ROTATION_OVERDUE,
    UNUSED,
    ROTATION_STALLED,
    REVOKED_IN_USE,
    ENV_MISMATCH,
    SHARED,
)
_SLUGS = {
    NEW_IP: "newip", ERROR_CLUSTER: "4xx", SPIKE: "spike", AFTER_REVOKE: "revoked", FROM_BROWSER: "browser",
    KEY_MANAGEMENT: "keymgmt", ROTATION_OVERDUE: "overdue", UNUSED: "unused", ENV_MISMATCH: "envmismatch",
    SHARED: "shared",
}  # fmt: skip
# What the platform calls a key-management path (the API serves none of them): the simulator's truth for them.
KEY_MANAGEMENT_PATH = re.compile(key_management.DEFAULT_PATTERNS[0], re.IGNORECASE)
# Keys that existed before the simulated window were created at different times before it (spread over this
# many days, by key id): one actor creating a tenant's keys all at the same instant would be a lifecycle burst.
BACKDATE_DAYS = 20

# Honesty floors the injected incidents are built to clear (see the module docstring of keywatch.sim).
SPIKE_MIN_FACTOR = 12.0  # times the key's normal rate for that time of day
SPIKE_MIN_RATE = 150.0  # requests per minute, whatever the baseline
SPIKE_MIN_BASELINE = 3.0  # requests per minute the key must normally have at that time
AFTER_REVOKE_MIN_GAP_MS = 8 * MINUTE_MS  # the first request after revocation comes later than this
CLUSTER_MAX_RATE = 55.0  # mean errors/min of a 4xx cluster: below the spike floor even with noise
ROTATION_GRACE_MS = 3_000  # benign in-flight requests on a revoked key end within this
# A benign revocation comes this long after the key's last request: the revoked-while-in-use window (15 whole
# minutes before the revocation's minute) holds none of them.
REVOKE_AFTER_DRAIN_MIN = 17
KEY_HISTORY_MS = 12 * HOUR_MS  # an incident's key carried traffic for at least this long before it

Env = Literal["sandbox", "live"]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Request tuple layout (cheap to build, encoded once): see keywatch.sim.generator.encode_request. tenant, key_id,
# env, ip, method, path, status, latency_ms, user_agent, request_id; a browser's request adds its headers
# (origin, referer, sec_fetch_site, sec_fetch_mode; None: not sent).
PlainRequest = tuple[str, str, str, str, str, str, int, float, str, str]
BrowserHeaders = tuple[str | None, str | None, str | None, str | None]
HeaderRequest = tuple[
    str, str, str, str, str, str, int, float, str, str, str | None, str | None, str | None, str | None
]
Request = PlainRequest | HeaderRequest

_TENANT_NAMES = (
    "acme", "globex", "initech", "umbrella", "hooli", "vandelay", "wonka", "tyrell", "cyberdyne", "soylent",
    "massive-dynamic", "aperture", "oscorp", "wayne-ent", "stark-ind", "gringotts", "monsters-inc",
    "dunder-mifflin", "pied-piper", "bluth-co", "sterling-cooper", "los-pollos", "krusty-krab",
    "planet-express", "duff", "buy-n-large", "nakatomi", "weyland", "black-mesa", "prestige-world",
)  # fmt: skip
_TIMEZONES = (-8.0, -7.0, -6.0, -5.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 8.0, 9.0, 10.0)
_SERVICES = (
    "billing-sync", "checkout-web", "reporting", "mobile-backend", "webhook-relay", "data-export", "ci-tests",
    "crm-integration", "erp-connector", "support-tools", "analytics-etl", "partner-portal", "invoicing",
    "fulfilment", "fraud-screening", "ledger-recon",
)  # fmt: skip
_ROLES = ("read_only", "standard", "payments_write", "reporting", "admin")
_PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar")
_CLIENT_LIBS = (
    "python-requests/2.31.0", "python-httpx/0.27.0", "okhttp/4.12.0", "Go-http-client/2.0", "axios/1.6.7",
    "node-fetch/3.3.2", "Java/17.0.9", "Apache-HttpClient/5.2.1 (Java/21.0.2)", "Ruby/3.2 faraday/2.9.0",
)  # fmt: skip
_ATTACKER_AGENTS = ("python-requests/2.28.1", "curl/7.81.0", "Go-http-client/1.1", "Mozilla/5.0 (compatible)")

# Endpoints: (method, path template, weight, median latency ms). `{x}` is an id from the key's own pools.
Endpoint = tuple[str, str, float, float]
ENDPOINTS: dict[str, tuple[Endpoint, ...]] = {
    "commerce": (
        ("GET", "/v1/customers/{cus}", 20, 35), ("GET", "/v1/customers?limit=100", 4, 120),
        ("POST", "/v1/customers", 3, 90), ("POST", "/v1/customers/{cus}", 3, 80), ("GET", "/v1/orders", 6, 110),
        ("GET", "/v1/orders/{ord}", 16, 40), ("POST", "/v1/orders", 7, 160), ("POST", "/v1/payments", 5, 320),
        ("GET", "/v1/payments/{pay}", 5, 45), ("POST", "/v1/refunds", 0.6, 280), ("GET", "/v1/products", 5, 60),
        ("DELETE", "/v1/customers/{cus}", 0.2, 70),
    ),
    "reporting": (
        ("GET", "/v1/orders?limit=100", 12, 180), ("GET", "/v1/invoices/{inv}", 10, 50),
        ("GET", "/v1/invoices?limit=100", 6, 210), ("GET", "/v1/balance", 2, 30), ("GET", "/v1/events", 8, 90),
        ("GET", "/v1/payments?limit=100", 5, 200), ("GET", "/v1/customers/{cus}", 6, 35),
    ),
    "sync": (
        ("GET", "/v1/events", 10, 85), ("GET", "/v1/customers/{cus}", 10, 35), ("POST", "/v1/customers/{cus}", 6, 80),
        ("GET", "/v1/orders/{ord}", 8, 40), ("POST", "/v1/invoices", 3, 150), ("GET", "/v1/invoices/{inv}", 5, 50),
    ),
    "payments": (
        ("POST", "/v1/payments", 12, 340), ("GET", "/v1/payments/{pay}", 10, 45), ("POST", "/v1/refunds", 1, 290),
        ("GET", "/v1/balance", 2, 30), ("POST", "/v1/payments/{pay}/capture", 6, 260),
        ("GET", "/v1/customers/{cus}", 5, 35),
    ),
}  # fmt: skip
_PROBE_PATHS = (
    ("GET", "/v1/admin/users"), ("GET", "/v1/keys"), ("POST", "/v1/keys"), ("GET", "/v1/account/settings"),
    ("POST", "/v1/transfers"), ("POST", "/v1/payouts"), ("GET", "/v1/payouts"), ("GET", "/v1/billing/plan"),
    ("POST", "/v1/webhooks"), ("GET", "/v1/team/members"), ("DELETE", "/v1/customers/{cus}"),
    ("POST", "/v1/refunds"), ("GET", "/v1/audit-log"), ("POST", "/v1/team/invites"), ("GET", "/v1/admin/tenants"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """Everything the scenario is drawn from."""

    seed: int = 7
    days: float = 4.0
    tenants: int = 20
    keys: int = 200
    start: datetime = DEFAULT_START
    scale: float = 1.0
    learning_days: float = 2.0
    incidents_per_type: int | None = None  # default: one per 20 keys, at least 1
    hard_network: bool = False  # add keywatch.sim.situations_network (residential browsers, old keys, CI)

    @property
    def start_ms(self) -> int:
        """Scenario start, epoch ms (floored to the minute)."""
        ms = int(self.start.timestamp() * 1000)
        return ms - ms % MINUTE_MS

    @property
    def end_ms(self) -> int:
        """Scenario end, epoch ms (exclusive)."""
        return self.start_ms + int(self.days * DAY_MS)

    @property
    def learning_end_ms(self) -> int:
        """No incident starts before this (the learning history ends here)."""
        learn = min(self.learning_days, self.days / 2)
        return self.start_ms + int(learn * DAY_MS)

    @property
    def per_type(self) -> int:
        """Incidents injected per alert type."""
        return self.incidents_per_type if self.incidents_per_type is not None else max(1, self.keys // 20)


@dataclass(slots=True)
class Tenant:
    """A customer of the API: its timezone (for daily cycles), its networks and its portal users."""

    name: str
    index: int
    tz_hours: float
    peak_hour: float
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    office_ip: str
    actors: list[str]


@dataclass(frozen=True, slots=True)
class Host:
    """A client machine using a key: an address inside one of the tenant's networks, live for a while."""

    ip: str
    network: str
    start_ms: int
    end_ms: int


@dataclass(slots=True)
class App:
    """The client application behind a key; shared by the old and new key of a rotation."""

    seed: str
    profile: str
    hosts: list[Host]
    agents: list[tuple[int, str]]  # (from_ms, user agent), sorted
    peak_rate: float  # requests/min at the tenant's local peak hour, before --scale
    trough: float  # fraction of the peak at the quietest hour
    schedule: Literal["always", "business", "cron"]
    cron_minute: int
    cron_burst: int
    p4xx: float
    p5xx: float
    bumps: list[tuple[int, int, float]] = field(default_factory=list)  # deploys: (start, end, factor)
    idle: list[tuple[int, int]] = field(default_factory=list)  # no traffic at all

    def agent_at(self, ts_ms: int) -> str:
        """The user agent the app sends at `ts_ms` (deploys may bump its version)."""
        current = self.agents[0][1]
        for since, agent in self.agents:
            if since > ts_ms:
                break
            current = agent
        return current

    def hosts_at(self, ts_ms: int) -> list[Host]:
        """Hosts in service at `ts_ms`."""
        return [h for h in self.hosts if h.start_ms <= ts_ms < h.end_ms]


@dataclass(slots=True)
class KeyPlan:
    """One API key: identity, the app using it and when it carries traffic."""

    tenant: Tenant
    key_id: str
    name: str
    env: Env
    role: str
    app: App
    created_ms: int
    traffic_start_ms: int
    traffic_end_ms: int
    revoked_ms: int | None = None
    replaces: str | None = None
    ramp: tuple[int, int, bool] | None = None  # (start, end, up): rotation hand-over of the traffic
    incident: bool = False
    busy: list[tuple[int, int]] = field(default_factory=list)  # windows kept free of benign changes

    @property
    def subject(self) -> str:
        """`<tenant>/<key_id>`."""
        return f"{self.tenant.name}/{self.key_id}"

    def normal_rate(self, ts_ms: int, scale: float = 1.0) -> float:
        """Expected requests/min at `ts_ms`: daily cycle, schedule, deploys, idle gaps, rotation hand-over."""
        if not self.traffic_start_ms <= ts_ms < self.traffic_end_ms:
            return 0.0
        app = self.app
        local_h = (ts_ms / HOUR_MS + self.tenant.tz_hours) % 24.0
        day = (1.0 + math.cos(2 * math.pi * (local_h - self.tenant.peak_hour) / 24.0)) / 2.0
        factor = app.trough + (1.0 - app.trough) * day
        if app.schedule == "business" and not 8.0 <= local_h < 19.0:
            factor *= 0.03
        weekday = int((ts_ms / HOUR_MS + self.tenant.tz_hours) // 24 + 3) % 7  # 0 = Monday (epoch was a Thursday)
        if weekday >= 5:
            factor *= 0.3 if app.schedule == "business" else 0.7
        for start, end, bump in app.bumps:
            if start <= ts_ms < end:
                factor *= bump
        for start, end in app.idle:
            if start <= ts_ms < end:
                return 0.0
        if self.ramp is not None:
            start, end, up = self.ramp
            share = min(1.0, max(0.0, (ts_ms - start) / max(1, end - start)))
            factor *= share if up else 1.0 - share
        return app.peak_rate * factor * scale

    def is_free(self, start_ms: int, end_ms: int) -> bool:
        """No incident window of this key overlaps [start, end)."""
        return all(end_ms <= s or start_ms >= e for s, e in self.busy)


@dataclass(slots=True)
class Incident:
    """An injected incident and its label. Small incidents carry their records; a spike carries a rate."""

    id: str
    type: str
    key: KeyPlan
    start_ms: int
    end_ms: int
    description: str
    records: list[tuple[int, Request]] = field(default_factory=list)
    spike_factor: float = 0.0
    spike_floor: float = 0.0  # requests/min the spike reaches at least
    tenant_alert: bool = False  # the alert is about the tenant as a whole (its label has an empty key_id)

    def label(self, fmt: Callable[[int], str]) -> dict[str, Any]:
        """The label line for labels.jsonl."""
        return {
            "id": self.id,
            "type": self.type,
            "tenant": self.key.tenant.name,
            "key_id": "" if self.tenant_alert else self.key.key_id,
            "start": fmt(self.start_ms),
            "end": fmt(self.end_ms),
            "description": self.description,
        }


@dataclass(slots=True)
class Plan:
    """The whole scenario, small enough to hold in memory."""

    config: ScenarioConfig
    tenants: list[Tenant]
    keys: list[KeyPlan]
    lifecycle: list[tuple[int, dict[str, Any]]]  # (ts_ms, event without ts), sorted
    incidents: list[Incident]
    extra: list[tuple[KeyPlan, list[tuple[int, Request]]]]  # benign non-Poisson records (scope-change 403s)
    networks: list[dict[str, Any]]
    benign: dict[str, int]


def env_networks(tenant: Tenant, env: Env) -> tuple[list[IpNetwork], list[IpNetwork]]:
    """The tenant's IPv4 and IPv6 networks that its apps of `env` run in: sandbox apps (test, CI, staging) on
    networks of their own, apart from the production hosts of the live apps, as the platform asks (the first
    third of the tenant's IPv4 /24s, at least one, and its first IPv6 /64 when it has two or more)."""
    v4: list[IpNetwork] = [n for n in tenant.networks if n.version == 4]
    v6: list[IpNetwork] = [n for n in tenant.networks if n.version == 6]
    cut4, cut6 = max(1, len(v4) // 3), (1 if len(v6) >= 2 else 0)
    if env == "sandbox":
        return v4[:cut4], v6[:cut6]
    return v4[cut4:], v6[cut6:]


def seeded(seed: str) -> random.Random:
    """A pseudo-random generator for simulated data (never for secrets), reproducible from `seed`."""
    return random.Random(seed)  # noqa: S311 - reproducible test data, not cryptography


def request_id(rng: random.Random) -> str:
    """A gateway request id."""
    return f"req_{rng.getrandbits(64):016x}"


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


class _Planner:
    def __init__(self, config: ScenarioConfig) -> None:
        self.c = config
        self.rng = seeded(f"keywatch-sim/{config.seed}")
        self.t0 = config.start_ms
        self.end = config.end_ms
        self.learn_end = config.learning_end_ms
        self.tenants: list[Tenant] = []
        self.keys: list[KeyPlan] = []
        self.lifecycle: list[tuple[int, dict[str, Any]]] = []
        self.incidents: list[Incident] = []
        self.extra: list[tuple[KeyPlan, list[tuple[int, Request]]]] = []
        self.benign: dict[str, int] = {}
        self.key_ids: set[str] = set()
        self.attacker_ranges = self._attacker_ranges()
        self.networks: list[dict[str, Any]] = []

    # ---- identities -------------------------------------------------------------------------------------
    def _attacker_ranges(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        # Never used by any tenant: documentation /24s, 172.16.0.0/12 /24s and 2001:db8:f000::/36 /64s.
        pool: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.ip_network("203.0.113.0/24"),
            ipaddress.ip_network("198.51.100.0/24"),
            ipaddress.ip_network("192.0.2.0/24"),
        ]
        rng = seeded(f"keywatch-sim/{self.c.seed}/attackers")
        seen: set[str] = set()
        while len(pool) < 400:
            if rng.random() < 0.8:
                net: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.ip_network(
                    f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.0/24"
                )
            else:
                net = ipaddress.ip_network(f"2001:db8:{rng.randint(0xF000, 0xFFFF):x}:{rng.randint(0, 0xFFFF):x}::/64")
            if str(net) not in seen:
                seen.add(str(net))
                pool.append(net)
        rng.shuffle(pool)
        return pool

    def new_key_id(self, env: Env) -> str:
        while True:
            key_id = f"ak_{'live' if env == 'live' else 'test'}_{self.rng.getrandbits(48):012x}"
            if key_id not in self.key_ids:
                self.key_ids.add(key_id)
                return key_id

    def make_tenants(self) -> None:
        for i in range(self.c.tenants):
            base = _TENANT_NAMES[i % len(_TENANT_NAMES)]
            name = base if i < len(_TENANT_NAMES) else f"{base}-{i // len(_TENANT_NAMES) + 1}"
            octet = i + 1  # 10.<octet>.0.0/16 is this tenant's private address space
            thirds = self.rng.sample(range(0, 250), self.rng.randint(3, 7))
            nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
                ipaddress.ip_network(f"10.{octet}.{t}.0/24") for t in thirds
            ]
            if self.rng.random() < 0.35:  # dual-stack tenant
                for _ in range(self.rng.randint(1, 3)):
                    nets.append(ipaddress.ip_network(f"2001:db8:{0x100 + i:x}:{self.rng.randint(0, 0xFFFF):x}::/64"))
            domain = f"{name}.example"
            actors = [f"{p}@{domain}" for p in self.rng.sample(_PEOPLE, 3)] + [f"ci-bot@{domain}"]
            tenant = Tenant(
                name=name,
                index=i,
                tz_hours=self.rng.choice(_TIMEZONES),
                peak_hour=self.rng.uniform(12.5, 16.5),
                networks=nets,
                office_ip=f"10.{octet}.254.{self.rng.randint(2, 250)}",
                actors=actors,
            )
            self.tenants.append(tenant)
            for net in nets:
                self.networks.append(
                    {"network": str(net), "asn": 64600 + i, "org": f"{name} (simulated)", "role": "tenant"}
                )
        for j, net in enumerate(self.attacker_ranges[:64]):
            self.networks.append(
                {"network": str(net), "asn": 65000 + j, "org": f"hosting provider {j} (simulated)", "role": "attacker"}
            )

    def host(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network, used: set[str], start: int, end: int) -> Host:
        while True:
            index = self.rng.randint(10, 240) if net.version == 4 else self.rng.getrandbits(64) or 1
            ip = str(net[index])
            if ip not in used:
                used.add(ip)
                return Host(ip=ip, network=str(net), start_ms=start, end_ms=end)

    def make_app(self, tenant: Tenant, env: Env) -> App:
        rng = self.rng
        v4, v6 = env_networks(tenant, env)
        n_nets = rng.choices((1, 2, 3), weights=(50, 35, 15))[0]
        pool = list(v4) + (list(v6) * 2 if v6 and rng.random() < 0.6 else [])
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for net in rng.sample(pool, min(len(pool), n_nets * 2)):
            if net not in nets:
                nets.append(net)
            if len(nets) == n_nets:
                break
        used: set[str] = set()
        hosts = [
            self.host(net, used, self.t0 - DAY_MS, self.end + DAY_MS) for net in nets for _ in range(rng.randint(1, 5))
        ]
        if env == "live":
            tier = rng.choices(("quiet", "low", "medium", "busy"), weights=(44, 40, 13, 3))[0]
        else:
            tier = rng.choices(("quiet", "low", "medium"), weights=(65, 30, 5))[0]
        low, high = {"quiet": (0.2, 1.5), "low": (1.5, 8.0), "medium": (8.0, 35.0), "busy": (35.0, 160.0)}[tier]
        schedule: Literal["always", "business", "cron"] = rng.choices(
            ("always", "business", "cron"), weights=(75, 17, 8) if tier in ("quiet", "low") else (82, 18, 0)
        )[0]
        lib = rng.choice(_CLIENT_LIBS)
        major, minor = rng.randint(1, 6), rng.randint(0, 20)
        service = rng.choice(_SERVICES)
        return App(
            seed=f"{self.c.seed}/{tenant.name}/{rng.getrandbits(32):08x}",
            profile=rng.choice(tuple(ENDPOINTS)),
            hosts=hosts,
            agents=[(self.t0 - DAY_MS, f"{tenant.name}-{service}/{major}.{minor}.0 {lib}")],
            peak_rate=_log_uniform(rng, low, high),
            trough=rng.uniform(0.06, 0.35),
            schedule=schedule,
            cron_minute=rng.randrange(60),
            cron_burst=rng.randint(15, 60),
            p4xx=rng.uniform(0.006, 0.025),
            p5xx=rng.uniform(0.0005, 0.003),
        )

    def created_event(
        self, key: KeyPlan, ts: int, actor: str | None = None, channel: str | None = "portal", mfa: bool | None = True
    ) -> None:
        """The key's creation event (by a random actor of its tenant, in the portal with MFA unless told). A key
        existing before the window (`ts` the window's start) is created 1-`BACKDATE_DAYS` days before it."""
        actor = actor or self.rng.choice(key.tenant.actors)
        if ts == self.t0:
            ts = self.t0 - DAY_MS - zlib.crc32(key.key_id.encode()) % ((BACKDATE_DAYS - 1) * DAY_MS) // 1000 * 1000
            key.created_ms = ts
        event: dict[str, Any] = {
            "type": "apiKey.created",
            "tenant": key.tenant.name,
            "key_id": key.key_id,
            "name": key.name,
            "env": key.env,
            "role": key.role,
            "actor": actor,
            "replaces_key_id": key.replaces,
            "ip": key.tenant.office_ip,
            "channel": channel,
            "mfa": mfa,
        }
        self.lifecycle.append((ts, {k: v for k, v in event.items() if k not in ("channel", "mfa") or v is not None}))

    def lifecycle_event(
        self,
        kind: str,
        key: KeyPlan,
        ts: int,
        role: str | None = None,
        actor: str | None = None,
        channel: str | None = "portal",
        mfa: bool | None = True,
    ) -> None:
        """A scope change or revocation of the key (by a random actor of its tenant, in the portal with MFA
        unless told)."""
        event: dict[str, Any] = {
            "type": kind,
            "tenant": key.tenant.name,
            "key_id": key.key_id,
            "name": key.name,
            "env": key.env,
            "role": role or key.role,
            "actor": actor or self.rng.choice(key.tenant.actors),
            "replaces_key_id": None,
            "ip": key.tenant.office_ip,
            "channel": channel,
            "mfa": mfa,
        }
        self.lifecycle.append((ts, {k: v for k, v in event.items() if k not in ("channel", "mfa") or v is not None}))

    def new_key(
        self, tenant: Tenant, env: Env, created: int, app: App | None = None, name: str | None = None
    ) -> KeyPlan:
        app = app or self.make_app(tenant, env)
        service = app.agents[0][1].split("/", 1)[0].removeprefix(f"{tenant.name}-")
        key = KeyPlan(
            tenant=tenant,
            key_id=self.new_key_id(env),
            name=name or f"{service} ({env})",
            env=env,
            role=self.rng.choice(_ROLES[:4]),
            app=app,
            created_ms=created,
            traffic_start_ms=max(self.t0, created),
            traffic_end_ms=self.end,
        )
        self.keys.append(key)
        return key

    def make_keys(self) -> None:
        weights = [1.0 / (i + 1) ** 0.7 for i in range(len(self.tenants))]
        counts = [2] * len(self.tenants)
        for _ in range(max(0, self.c.keys - 2 * len(self.tenants))):
            counts[self.rng.choices(range(len(self.tenants)), weights=weights)[0]] += 1
        for tenant, count in zip(self.tenants, counts, strict=True):
            for _ in range(count):
                env: Env = "live" if self.rng.random() < 0.65 else "sandbox"
                if self.rng.random() < 0.85:
                    key = self.new_key(tenant, env, self.t0)  # existed before the window: created event at t0
                else:  # created during the learning history; traffic starts a little later
                    created = self.t0 + self.rng.randrange(0, max(1, self.learn_end - self.t0 - 6 * HOUR_MS))
                    key = self.new_key(tenant, env, created)
                    key.traffic_start_ms = created + self.rng.randint(2, 45) * MINUTE_MS
                self.created_event(key, key.created_ms)

    # ---- incidents ---------------------------------------------------------------------------------------
    def incident_times(self, n: int, slot: int) -> list[int]:
        # The first incident of each type lands in the first hour after learning (handy for the live demo).
        first = self.learn_end + (10 + 12 * slot) * MINUTE_MS
        times = [first] if n else []
        for _ in range(n - 1):
            times.append(self.random_time())
        return times

    def candidates(self, when: int, need_rate: float = 0.0) -> list[KeyPlan]:
        out = []
        for key in self.keys:
            if key.incident or key.replaces or key.created_ms > self.learn_end - KEY_HISTORY_MS:
                continue
            if key.app.schedule == "cron" or not key.traffic_start_ms <= when - KEY_HISTORY_MS:
                continue
            if need_rate and not (
                need_rate <= key.normal_rate(when, self.c.scale) <= 80.0
                and key.normal_rate(when + 20 * MINUTE_MS, self.c.scale) >= need_rate
            ):
                continue
            out.append(key)
        return out

    def random_time(self) -> int:
        start, end = self.learn_end + HOUR_MS, self.end - 45 * MINUTE_MS
        return self.rng.randrange(start, max(start + 1, end))

    def take(self, when: int, need_rate: float = 0.0) -> tuple[KeyPlan, int] | None:
        """An unused key fit for an incident at `when` (or, failing that, at another time)."""
        for attempt in range(40):
            at = when if attempt == 0 else self.random_time()
            pool = self.candidates(at, need_rate)
            if pool:
                key = self.rng.choice(pool)
                key.incident = True
                return key, at
        return None

    def add_incident(self, kind: str, key: KeyPlan, start: int, end: int, text: str, **kw: Any) -> Incident:
        incident = self.add_label(kind, key, start, end, text, **kw)
        key.busy.append((start - 2 * HOUR_MS, end + 2 * HOUR_MS))
        return incident

    def add_label(self, kind: str, key: KeyPlan, start: int, end: int, text: str, **kw: Any) -> Incident:
        """An incident's label only: the key's windows for benign changes stay as they are."""
        number = sum(1 for i in self.incidents if i.type == kind) + 1
        slug = _SLUGS.get(kind, kind.split(".", 1)[-1].lower())
        incident = Incident(
            id=f"inc-{slug}-{number:03d}", type=kind, key=key, start_ms=start, end_ms=end, description=text, **kw
        )
        self.incidents.append(incident)
        return incident

    def record(
        self,
        key: KeyPlan,
        ts: int,
        ip: str,
        method: str,
        path: str,
        status: int,
        latency: float,
        agent: str,
        headers: BrowserHeaders | None = None,
    ) -> tuple[int, Request]:
        rid = request_id(self.rng)
        plain = (key.tenant.name, key.key_id, key.env, ip, method, path, status, round(latency, 1), agent, rid)
        return ts, plain if headers is None else (*plain, *headers)

    def label_key_management(self, key: KeyPlan, records: list[tuple[int, Request]], why: str) -> None:
        """Label the key-management requests among an incident's records (the detector must see them): from
        the first to the last of them."""
        times = [ts for ts, req in records if KEY_MANAGEMENT_PATH.search(req[5].split("?", 1)[0])]
        if times:
            self.add_incident(
                KEY_MANAGEMENT, key, min(times), max(times),
                f"{len(times)} request(s) on key-management paths during {why}.",
            )  # fmt: skip

    def plan_new_ip(self, when: int) -> None:
        taken = self.take(when)
        if taken is None:
            return
        key, when = taken
        rng = self.rng
        net = self.attacker_ranges.pop()
        used: set[str] = set()
        ips = [self.host(net, used, 0, 0).ip for _ in range(rng.choice((1, 1, 2)))]
        agent = rng.choice(_ATTACKER_AGENTS)
        n = rng.randint(5, 40)
        duration = rng.randint(1, 20) * MINUTE_MS
        times = sorted(when + rng.randrange(duration) for _ in range(n - 1))
        recon = ("/v1/balance", "/v1/customers?limit=100", "/v1/payments?limit=100", "/v1/account", "/v1/events")
        records = [self.record(key, when, ips[0], "GET", "/v1/balance", 200, rng.uniform(20, 60), agent)]
        for ts in times:
            path = rng.choice(recon)
            status = 200 if rng.random() < 0.9 else 404
            records.append(self.record(key, ts, rng.choice(ips), "GET", path, status, rng.uniform(25, 250), agent))
        self.add_incident(
            NEW_IP,
            key,
            records[0][0],
            records[-1][0],
            f"Leaked key used from {', '.join(ips)} ({net}, a network the key never used): "
            f"{n} reconnaissance requests with {agent!r}.",
            records=records,
        )

    def plan_error_cluster(self, when: int, slot: int) -> None:
        taken = self.take(when)
        if taken is None:
            return
        key, when = taken
        rng = self.rng
        host = rng.choice(key.app.hosts)
        kind = (401, 403, 404)[slot % 3]
        # 60-250 errors spread so that no minute reaches the spike floor (the cluster must not also be a
        # request spike, or the label would be ambiguous) while all of them fall within 5 minutes.
        n = rng.randint(60, 250)
        duration = int(min(4.6, max(1.5, n / CLUSTER_MAX_RATE)) * MINUTE_MS)
        times = sorted(when + rng.randrange(duration) for _ in range(n - 1))
        times.insert(0, when)
        agent = rng.choice(_ATTACKER_AGENTS)
        records = []
        endpoints = ENDPOINTS[key.app.profile]
        for ts in times:
            if kind == 401:
                method, template = rng.choice(endpoints)[:2]
                path = template.split("{", 1)[0].rstrip("/") or "/v1/customers"
                what = "credential stuffing (invalid secret for this key id)"
            elif kind == 403:
                method, path = rng.choice(_PROBE_PATHS)
                path = path.replace("{cus}", f"cus_{rng.getrandbits(40):010x}")
                what = "scope probing (endpoints outside the key's role)"
            else:
                method = "GET"
                collection, prefix = rng.choice((("customers", "cus"), ("orders", "ord"), ("invoices", "inv")))
                path = f"/v1/{collection}/{prefix}_{rng.getrandbits(56):014x}"
                what = "id enumeration (many distinct unknown ids)"
            records.append(self.record(key, ts, host.ip, method, path, kind, rng.uniform(4, 25), agent))
        if kind == 403:
            self.label_key_management(key, records, "scope probing")
        self.add_incident(
            ERROR_CLUSTER,
            key,
            records[0][0],
            records[-1][0],
            f"{n} x HTTP {kind} within {duration / 60000:.1f} min from {host.ip}: {what}.",
            records=records,
        )

    def plan_spike(self, when: int) -> None:
        taken = self.take(when, need_rate=SPIKE_MIN_BASELINE)
        if taken is None:
            return
        key, start = taken
        start -= start % MINUTE_MS
        rng = self.rng
        duration = rng.randint(5, 20) * MINUTE_MS
        factor = rng.uniform(SPIKE_MIN_FACTOR, 20.0)
        base = key.normal_rate(start, self.c.scale)
        floor = SPIKE_MIN_RATE * 1.15
        if self.learn_end - self.t0 < DAY_MS:
            # A history shorter than a day has no baseline for every hour: beat its busiest hour instead.
            busiest = max(key.normal_rate(t, self.c.scale) for t in range(self.t0, self.learn_end, 10 * MINUTE_MS))
            floor = max(floor, 1.2 * SPIKE_MIN_FACTOR * busiest)
        self.add_incident(
            SPIKE,
            key,
            start,
            start + duration,
            f"Request rate x{max(factor, floor / base):.0f} (from ~{base:.0f}/min to "
            f"~{max(factor * base, floor):.0f}/min) for {duration // MINUTE_MS} min: runaway client loop "
            "or scraping with the key.",
            spike_factor=factor,
            spike_floor=floor,
        )

    def plan_after_revoke(self, when: int) -> None:
        taken = self.take(when)
        if taken is None:
            return
        key, when = taken
        rng = self.rng
        gap = rng.randint(AFTER_REVOKE_MIN_GAP_MS // 1000 + 60, 3 * 3600) * 1000
        revoked = when - gap
        host = rng.choice(key.app.hosts)
        agent = key.app.agent_at(revoked)
        if rng.random() < 0.5:
            # Rotated: the new key takes over the same hosts; one forgotten job still has the old secret.
            switch_end = revoked - rng.randint(REVOKE_AFTER_DRAIN_MIN, 120) * MINUTE_MS
            switch_start = switch_end - rng.randint(2, 30) * MINUTE_MS
            new = self.rotate(key, switch_start - rng.randint(5, 90) * MINUTE_MS, switch_start, switch_end, None)
            why = f"after a rotation to {new.key_id}, a job on {host.ip} still uses the old secret"
        else:
            key.traffic_end_ms = revoked - rng.randint(30, 360) * MINUTE_MS
            why = f"the key was decommissioned, but a forgotten job on {host.ip} still uses it"
        key.revoked_ms = revoked
        self.lifecycle_event("apiKey.revoked", key, revoked)
        n = rng.randint(3, 20)
        ts = when
        records = []
        method, template = ENDPOINTS[key.app.profile][0][:2]
        path = template.split("{", 1)[0].rstrip("/") or "/v1/events"
        for _ in range(n):
            records.append(self.record(key, ts, host.ip, method, path, 401, rng.uniform(3, 12), agent))
            ts += rng.randint(20, 90) * 1000
        self.add_incident(
            AFTER_REVOKE,
            key,
            records[0][0],
            records[-1][0],
            f"{n} requests (401) {(records[0][0] - revoked) / 60000:.0f} min after revocation: {why}.",
            records=records,
        )

    # ---- benign changes ----------------------------------------------------------------------------------
    def rotate(self, old: KeyPlan, created: int, switch_start: int, switch_end: int, revoke: int | None) -> KeyPlan:
        new = self.new_key(old.tenant, old.env, created, app=old.app, name=old.name)
        new.role, new.replaces = old.role, old.key_id
        new.traffic_start_ms = switch_start
        new.ramp = (switch_start, switch_end, True)
        old.ramp = (switch_start, switch_end, False)
        old.traffic_end_ms = switch_end
        self.created_event(new, created)
        if revoke is not None and revoke < self.end:
            old.revoked_ms = revoke
            self.lifecycle_event("apiKey.revoked", old, revoke)
        return new

    def count(self, what: str) -> None:
        self.benign[what] = self.benign.get(what, 0) + 1

    def plan_benign(self) -> None:
        rng = self.rng
        initial = [k for k in self.keys if not k.replaces]
        span = self.end - self.t0
        for key in list(initial):
            if key.incident or key.revoked_ms is not None:
                continue
            r = rng.random()
            # A benign change comes after the key's creation (a key created during the learning days too).
            since = max(self.t0, key.created_ms)
            left = self.end - since
            if r < 0.10 and span > DAY_MS and left > 9 * HOUR_MS:  # rotation with overlap, same hosts
                created = since + rng.randrange(2 * HOUR_MS, left - 6 * HOUR_MS)
                switch_start = created + rng.randint(5, 120) * MINUTE_MS
                switch_end = switch_start + rng.randint(2, 30) * MINUTE_MS
                if rng.random() < 0.25:  # prompt clean-up: revoked soon after the traffic moved
                    revoke = switch_end + rng.randint(REVOKE_AFTER_DRAIN_MIN, 40) * MINUTE_MS
                else:
                    revoke = switch_end + rng.randint(REVOKE_AFTER_DRAIN_MIN, 18 * 60) * MINUTE_MS
                self.rotate(key, created, switch_start, switch_end, revoke)
                self.count("rotations")
            elif r < 0.15 and left > 3 * HOUR_MS:  # scope change, sometimes with a few 403s from a stale client
                at = since + rng.randrange(HOUR_MS, left - HOUR_MS)
                role = rng.choice([x for x in _ROLES if x != key.role])
                self.lifecycle_event("apiKey.scopeChanged", key, at, role=role)
                if default_rank(role) > default_rank(key.role):  # a widening: the escalation rule flags it
                    self.add_label(
                        PRIVILEGE, key, at, at,
                        f"Planned scope change {key.role} -> {role}: a widening, which the rule flags, planned or not.",
                    )  # fmt: skip
                key.role = role
                self.count("scope_changes")
                if rng.random() < 0.5 and key.app.hosts:
                    host = rng.choice(key.app.hosts)
                    method, template = rng.choice(ENDPOINTS[key.app.profile])[:2]
                    path = template.split("{", 1)[0].rstrip("/")
                    n = rng.randint(4, 25)
                    records = [
                        self.record(key, at + rng.randint(10, 40 * 60) * 1000, host.ip, method, path, 403,
                                    rng.uniform(4, 20), key.app.agent_at(at))
                        for _ in range(n)
                    ]  # fmt: skip
                    self.extra.append((key, sorted(records, key=lambda x: x[0])))
                    self.count("scope_change_403_trickles")
            elif r < 0.18 and span > 2 * DAY_MS:  # sandbox/test key decommissioned: traffic stops, later revoked
                stop = self.t0 + rng.randrange(6 * HOUR_MS, span - 12 * HOUR_MS)
                key.traffic_end_ms = stop
                revoke = stop + rng.randint(30, 600) * MINUTE_MS
                key.revoked_ms = revoke
                self.lifecycle_event("apiKey.revoked", key, revoke)
                self.count("decommissions")
            elif r < 0.23 and span > 2 * DAY_MS:  # idle for 12-30 h, then back from the same hosts
                start = self.t0 + rng.randrange(0, span - DAY_MS)
                key.app.idle.append((start, start + rng.randint(12, 30) * HOUR_MS))
                self.count("idle_gaps")
        for key in initial:
            app = key.app
            # deploys: short bumps x1.5-2 during working hours, often with a new client version
            if app.peak_rate >= 3.0:
                for day in range(math.ceil(span / DAY_MS)):
                    for _ in range(rng.choice((0, 1, 1, 2))):
                        local = rng.uniform(9.0, 18.0)
                        start = self.t0 + day * DAY_MS + int(((local - key.tenant.tz_hours) % 24) * HOUR_MS)
                        end = start + rng.randint(3, 10) * MINUTE_MS
                        if not key.is_free(start, end) or start >= self.end:
                            continue
                        app.bumps.append((start, end, rng.uniform(1.5, 2.0)))
                        self.count("deploy_bumps")
                        if rng.random() < 0.5:
                            name, _, rest = app.agents[-1][1].partition("/")
                            version, _, lib = rest.partition(" ")
                            parts = version.split(".")
                            parts[-1] = str(int(parts[-1]) + 1)
                            app.agents.append((start, f"{name}/{'.'.join(parts)} {lib}"))
                app.agents.sort()
            # autoscaling: new hosts inside networks the key already uses; sometimes one old host retires
            if rng.random() < 0.2 and app.hosts:
                at = self.t0 + rng.randrange(HOUR_MS, span - HOUR_MS)
                if not key.is_free(at - HOUR_MS, at + HOUR_MS):
                    continue
                used = {h.ip for h in app.hosts}
                known = sorted({h.network for h in app.hosts})
                for _ in range(rng.randint(1, 3)):
                    net = ipaddress.ip_network(rng.choice(known))
                    app.hosts.append(self.host(net, used, at, self.end + DAY_MS))
                if len(app.hosts) > 2 and rng.random() < 0.5:
                    old = app.hosts[0]
                    app.hosts[0] = Host(old.ip, old.network, old.start_ms, at + rng.randint(1, 30) * MINUTE_MS)
                self.count("autoscaling")
        # brand-new keys after the learning period, from networks the tenant already uses
        for _ in range(max(1, self.c.keys // 40)):
            if self.end - self.learn_end < 3 * HOUR_MS:
                break
            tenant = rng.choice(self.tenants)
            created = rng.randrange(self.learn_end, self.end - 2 * HOUR_MS)
            key = self.new_key(tenant, "live" if rng.random() < 0.6 else "sandbox", created)
            key.traffic_start_ms = created + rng.randint(5, 60) * MINUTE_MS
            self.created_event(key, created)
            self.count("new_keys_after_learning")

    def build(self, situations: Sequence[Callable[[_Planner], None]] = ()) -> Plan:
        self.make_tenants()
        self.make_keys()
        n = self.c.per_type
        if self.end - self.learn_end >= 2 * HOUR_MS:
            schedule: list[tuple[int, str, int]] = []
            for slot, kind in enumerate(PLANNED_TYPES):
                for i, when in enumerate(self.incident_times(n, slot)):
                    schedule.append((when, kind, i))
            # revocations first: they change the key's traffic window, which the others look at
            schedule.sort(key=lambda x: (x[1] != AFTER_REVOKE, x[1] != SPIKE, x[0]))
            for when, kind, i in schedule:
                if kind == NEW_IP:
                    self.plan_new_ip(when)
                elif kind == ERROR_CLUSTER:
                    self.plan_error_cluster(when, i)
                elif kind == SPIKE:
                    self.plan_spike(when)
                else:
                    self.plan_after_revoke(when)
        if self.c.hard_network:
            from keywatch.sim.situations_network import plan_network_situations

            plan_network_situations(self)
        self.plan_benign()
        if self.end - self.learn_end >= 2 * HOUR_MS:
            for situation in situations:  # after everything else: the default part of the plan is unchanged
                situation(self)
        self.lifecycle.sort(key=lambda item: (item[0], item[1]["type"] != "apiKey.created"))
        self.incidents.sort(key=lambda inc: (inc.start_ms, inc.id))
        return Plan(
            config=self.c,
            tenants=self.tenants,
            keys=self.keys,
            lifecycle=self.lifecycle,
            incidents=self.incidents,
            extra=self.extra,
            networks=self.networks,
            benign=self.benign,
        )


def build_plan(config: ScenarioConfig, situations: Sequence[Callable[[_Planner], None]] = ()) -> Plan:
    """Draw the whole scenario from `config` (deterministic for a given config), with extra `situations`
    (see keywatch.sim.profiles)."""
    return _Planner(config).build(situations)
