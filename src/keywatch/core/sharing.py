"""One key, many services: a key used at the same time by workloads that differ in client and network.

A workload is (user-agent product token, network): the product is the first product of the user agent,
lowercased, without its version (`python-requests/2.31.0` -> `python-requests`, so an SDK upgrade stays one
workload); the network is the request's ASN with GeoIP, else its IPv4 /16 or IPv6 /32. A browser user agent
(first product `Mozilla`) is no service workload: its users' networks are many and residential, and a key in a
browser is `apiKey.usedFromBrowser`'s business; its requests are ignored here. A request without a user agent
(absent, empty, blank or without a product token) belongs to the product `-`.

Event time is cut into windows of `window_minutes` (floored to the epoch). A window qualifies when two of its
workloads that differ in BOTH product and network each made at least `min_requests` requests in it, and no
other workload of the window links them (one that shares its product with one and its network with the
other: a dual-stack service with a sidecar on its IPv4 addresses is one service, `services`); the key
alerts (`apiKey.sharedAcrossServices`, once per `period_hours`) when `min_windows` windows within `period_hours`
qualified, past the key's learning period (the IP baseline's rule and defaults: `learning_seconds` since the
first request keywatch saw and `learning_requests` requests, or `learning_max_seconds`). Two keys of one
workload (a rotation overlap) and one workload on many addresses of one network (autoscaling) never count.

Decisions by event time: a window is decided once event time is `allowed_lateness` past its end (a tick then,
or the key's next request after it), when every record of it has arrived whatever their order; the alert's
time is that moment and its id derives from the key and the start of the window that completed the
condition. Counts, first/last seen and the kept workloads (the `MAX_WORKLOADS` with the smallest CRC-32 of
product and network when more show up) do not depend on the order records arrive in; the path and request-id
samples of the evidence are taken from the request that made the window hold two differing workloads on. (The
learning period's request count is the registry's, as for the IP baseline: for a key that reaches
`learning_requests` only after `learning_seconds`, the requests around that moment may count or not by arrival
order.)

State: `SharingState`, under `sharing`: the open windows (at most `MAX_OPEN_WINDOWS`; two at most with the
default lateness), each with at most `MAX_WORKLOADS` workloads (path samples of at most `MAX_PATHS` folded
paths and `MAX_IDS` request ids only in windows with two differing workloads); the qualifying windows of the
period (at most `MAX_QUALIFIED`) and the evidence of their workloads (at most `MAX_SEEN`). A key with one
workload keeps that window's one workload: product, network, count, first and last time.
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator

from keywatch.contract.events import RequestRecord, format_time
from keywatch.core.engine import Forward
from keywatch.core.ip_baseline import IpBaselineConfig, network_of, range_of
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyRegistryEntry, KeyState
from keywatch.geo import GeoLookup

NAME = "sharing"
ALERT_TYPE = "apiKey.sharedAcrossServices"

MAX_OPEN_WINDOWS = 4  # windows awaiting their decision (the oldest is decided early beyond it)
MAX_WORKLOADS = 8  # workloads per window (the smallest CRC-32s of product|network are kept)
MAX_QUALIFIED = 48  # qualifying windows kept per key (the newest)
MAX_SEEN = 6  # workloads in the evidence (the least busy is dropped)
MAX_PATHS = 6  # folded paths sampled per workload (the smallest CRC-32s)
MAX_IDS = 3  # request ids sampled per workload (the smallest CRC-32s)
TOP_PATHS = 3  # paths listed per workload in the evidence
MAX_PRODUCT = 32  # characters of a product token
MAX_PATH = 96  # characters of a path sample
MAX_ID = 64  # characters of a request id sample
NO_AGENT = "-"  # the product of a request without a usable user agent
BROWSER = "mozilla"  # the first product of browser user agents: not a service workload

_SCAN = 256  # characters of a user agent looked at
_PRODUCT = re.compile(r"[^\s/();,]+")
_LEARNING = IpBaselineConfig.model_fields


@functools.lru_cache(maxsize=4096)
def product_token(agent: str | None) -> str | None:
    """The user agent's first product, lowercased, without version (at most `MAX_PRODUCT` printable
    characters); `NO_AGENT` without one; None for a browser (`Mozilla/...`)."""
    if not agent:
        return NO_AGENT
    found = _PRODUCT.match(agent[:_SCAN].lstrip())
    if found is None:
        return NO_AGENT
    token = "".join(c for c in found.group(0)[: MAX_PRODUCT * 2] if c.isprintable())[:MAX_PRODUCT].lower()
    if not token:
        return NO_AGENT
    return None if token == BROWSER else token


@functools.lru_cache(maxsize=4096)
def _v6_network(ip: str) -> str:
    return network_of(ip, 16, 32)


def prefix_network(ip: str) -> str:
    """The network of an address without GeoIP: its IPv4 /16 (`203.0.0.0/16`) or IPv6 /32."""
    if ":" not in ip:
        second = ip.find(".", ip.find(".") + 1)
        return ip[:second] + ".0.0/16"
    return _v6_network(ip)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def fold_path(path: str) -> str:
    """A path as sampled: without query, cut after its second segment (`/v1/orders/ord_1` -> `/v1/orders`),
    at most `MAX_PATH` characters."""
    path = path.split("?", 1)[0]
    first = path.find("/", 1)
    second = path.find("/", first + 1) if first > 0 else -1
    return (path[:second] if second > 0 else path)[:MAX_PATH]


class Workload(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """A workload's requests in one window."""

    product: str
    network: str
    count: int
    first_ms: int
    last_ms: int
    paths: dict[str, int] = {}  # folded path -> requests (sampled once the window holds two differing workloads)
    ids: list[str] = []  # sample request ids (ditto)


class Window(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """One window of event time (index = start // window length) not decided yet."""

    index: int
    workloads: list[Workload]
    candidate: bool = False  # it holds two workloads that differ in product and network
    dropped: int = 0  # requests of workloads beyond `MAX_WORKLOADS`


class SeenWorkload(msgspec.Struct, array_like=True, gc=False):
    """A workload across the qualifying windows the evidence covers."""

    product: str
    network: str
    requests: int
    windows: int
    first_ms: int
    last_ms: int
    paths: dict[str, int]
    ids: list[str]


class SharingState(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """A key's open windows and the qualifying windows of the period."""

    open: list[Window]
    horizon: int = 0  # windows before this index are decided; later records of them are dropped (counted)
    qualified: list[int] = []  # indexes of the qualifying windows of the period, oldest first
    seen: list[SeenWorkload] = []  # the workloads of those windows (evidence)
    total: int = 0  # requests of the key in the windows `seen` covers
    quiet_until: int = 0  # no alert for a window before this index (once per period)
    late: int = 0  # records that came after their window was decided


class SharingConfig(BaseModel):
    """Settings of the shared-key detector (`[detection.sharing]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_requests: int = Field(default=5, ge=1, description="A workload is active in a window with this many requests.")
    window_minutes: int = Field(default=30, ge=1, le=1440, description="Length of a window (floored to the epoch).")
    min_windows: int = Field(
        default=3, ge=1, le=MAX_QUALIFIED, description="Qualifying windows within period_hours that alert."
    )
    period_hours: int = Field(
        default=24, ge=1, le=168, description="The span of min_windows; at most one alert per key per period."
    )
    learning_seconds: int = Field(
        default=_LEARNING["learning_seconds"].default,
        ge=0,
        description="As [detection.ip]: no window counts until this long after the key's first request ...",
    )
    learning_requests: int = Field(
        default=_LEARNING["learning_requests"].default, ge=0, description="... and this many requests."
    )
    learning_max_seconds: int = Field(
        default=_LEARNING["learning_max_seconds"].default,
        ge=0,
        description="Learning ends after this long even if learning_requests is not met.",
    )

    @model_validator(mode="after")
    def _check(self) -> SharingConfig:
        if self.min_windows * self.window_minutes > self.period_hours * 60:
            raise ValueError(
                f"min_windows ({self.min_windows}) windows of window_minutes ({self.window_minutes}) do not fit "
                f"in period_hours ({self.period_hours})"
            )
        if self.learning_max_seconds < self.learning_seconds:
            raise ValueError(
                f"learning_max_seconds ({self.learning_max_seconds}) must be >= learning_seconds "
                f"({self.learning_seconds})"
            )
        return self


def _differ(a: Workload | SeenWorkload, b: Workload | SeenWorkload) -> bool:
    return a.product != b.product and a.network != b.network


def services(workloads: list[Workload], min_requests: int) -> int:
    """How many services a window's workloads make: workloads that share a product or a network are one
    service (transitively, through any workload of the window); a service counts when one of its workloads
    made `min_requests` requests. Two services always differ in both product and network."""
    group = list(range(len(workloads)))

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for i, a in enumerate(workloads):
        for j in range(i):
            b = workloads[j]
            if a.product == b.product or a.network == b.network:
                group[root(i)] = root(j)
    return len({root(i) for i, w in enumerate(workloads) if w.count >= min_requests})


def _keep_smallest(items: list[str], value: str, cap: int) -> None:
    """Add `value` to the `cap` values with the smallest CRC-32 (an order-independent sample)."""
    if value in items:
        return
    if len(items) < cap:
        items.append(value)
        return
    largest = max(items, key=_crc)
    if _crc(value) < _crc(largest):
        items[items.index(largest)] = value


def _count_path(paths: dict[str, int], path: str, n: int = 1) -> None:
    if path in paths:
        paths[path] += n
        return
    if len(paths) >= MAX_PATHS:
        largest = max(paths, key=_crc)
        if _crc(path) >= _crc(largest):
            return
        del paths[largest]
    paths[path] = n


class Sharing(Detector[SharingState]):
    """Finds a key used at the same time by workloads that differ in client and network."""

    def __init__(self, config: SharingConfig, *, geo: GeoLookup | None = None, lateness_ms: int = 300_000) -> None:
        self.config = config
        self.geo = geo
        self._window_ms = config.window_minutes * 60_000
        self._lateness_ms = max(0, lateness_ms)
        self._period_windows = config.period_hours * 3_600_000 // self._window_ms
        self._learning_ms = config.learning_seconds * 1000
        self._learning_max_ms = config.learning_max_seconds * 1000

    # -- helpers -------------------------------------------------------------------------------------------

    def _learning(self, reg: KeyRegistryEntry, ts_ms: int) -> bool:
        first = reg.first_seen_ms
        if first is None:
            return True
        elapsed = ts_ms - first
        if elapsed >= self._learning_max_ms:
            return False
        return elapsed < self._learning_ms or reg.requests < self.config.learning_requests

    def _network(self, ip: str) -> str:
        if self.geo is not None:
            asn = self.geo.lookup(ip, range_of(ip)).asn
            if asn is not None:
                return f"AS{asn}"
        return prefix_network(ip)

    def _due(self, index: int) -> int:
        """When window `index` is decided: its end plus the allowed lateness."""
        return (index + 1) * self._window_ms + self._lateness_ms

    # -- hooks ---------------------------------------------------------------------------------------------

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Count the request into its window's workload (past learning, browsers aside)."""
        if not self.config.enabled or self._learning(key.registry, ts_ms):
            return None
        product = product_token(record.user_agent)
        if product is None:
            return None
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = SharingState([])
        index = ts_ms // self._window_ms
        if index < st.horizon:
            st.late += 1
            return None
        out: list[Finding | Forward] = []
        opened = st.open
        if opened and self._due(opened[0].index) <= ts_ms:  # windows whose tick has not run (it runs first)
            out += self._close(key, st, ts_ms)
        window = opened[-1] if opened and opened[-1].index == index else self._window(key, st, index, out)
        network = self._network(record.ip)
        workload = None
        for one in window.workloads:
            if one.product == product and one.network == network:
                workload = one
                break
        if workload is None:
            workload = self._add(key, window, product, network, ts_ms)
            if workload is None:
                window.dropped += 1
                return out or None
        workload.count += 1
        if ts_ms < workload.first_ms:
            workload.first_ms = ts_ms
        elif ts_ms > workload.last_ms:
            workload.last_ms = ts_ms
        if window.candidate:
            _count_path(workload.paths, fold_path(record.path))
            if record.request_id:
                _keep_smallest(workload.ids, record.request_id[:MAX_ID], MAX_IDS)
        return out or None

    def on_tick(self, key: KeyState, now_ms: int) -> Effects:
        """Decide the windows whose end plus the allowed lateness has passed."""
        st = self.state(key)
        if st is None or not st.open:
            return None
        return self._close(key, st, now_ms) or None

    # -- windows -------------------------------------------------------------------------------------------

    def _window(self, key: KeyState, st: SharingState, index: int, out: list[Finding | Forward]) -> Window:
        for window in st.open:
            if window.index == index:
                return window
        window = Window(index, [])
        st.open.append(window)
        st.open.sort(key=lambda w: w.index)
        while len(st.open) > MAX_OPEN_WINDOWS:  # only with a lateness of several windows
            oldest = st.open.pop(0)
            st.horizon = oldest.index + 1
            found = self._decide(key, st, oldest) if oldest.candidate else None
            if found is not None:
                out.append(found)
        return window

    def _add(self, key: KeyState, window: Window, product: str, network: str, ts_ms: int) -> Workload | None:
        """A new workload in `window` (None when the window is full of workloads with smaller CRC-32s)."""
        workloads = window.workloads
        new = Workload(product, network, 0, ts_ms, ts_ms)
        if len(workloads) >= MAX_WORKLOADS:
            crc = _crc(f"{product}|{network}")
            largest = max(workloads, key=lambda w: _crc(f"{w.product}|{w.network}"))
            if crc >= _crc(f"{largest.product}|{largest.network}"):
                return None
            workloads.remove(largest)
            window.dropped += largest.count
            window.candidate = any(_differ(a, b) for i, a in enumerate(workloads) for b in workloads[i + 1 :])
        if not window.candidate and any(_differ(one, new) for one in workloads):
            window.candidate = True
            key.ask_tick(NAME, self._due(window.index))
        workloads.append(new)
        return new

    def _close(self, key: KeyState, st: SharingState, upto_ms: int) -> list[Finding | Forward]:
        """Decide (in order) the open windows due at or before `upto_ms`; ask a tick for the next candidate."""
        out: list[Finding | Forward] = []
        opened = st.open
        while opened and self._due(opened[0].index) <= upto_ms:
            window = opened.pop(0)
            st.horizon = window.index + 1
            found = self._decide(key, st, window) if window.candidate else None
            if found is not None:
                out.append(found)
        for window in opened:
            if window.candidate:
                key.ask_tick(NAME, self._due(window.index))
                break
        return out

    def _decide(self, key: KeyState, st: SharingState, window: Window) -> Finding | None:
        """Count the window if it qualifies; the finding when it completes `min_windows` in the period."""
        cfg = self.config
        if services(window.workloads, cfg.min_requests) < 2:
            return None
        active = [w for w in window.workloads if w.count >= cfg.min_requests]
        index = window.index
        st.qualified = [q for q in st.qualified if q > index - self._period_windows]
        if not st.qualified:  # the evidence restarts with the first qualifying window of a period
            st.seen, st.total = [], 0
        st.qualified.append(index)
        del st.qualified[:-MAX_QUALIFIED]
        st.total += sum(w.count for w in window.workloads) + window.dropped
        for workload in active:
            self._merge(st, workload)
        if len(st.qualified) < cfg.min_windows or index < st.quiet_until:
            return None
        finding = self._finding(key, st, index)
        st.quiet_until = index + self._period_windows
        st.qualified, st.seen, st.total = [], [], 0
        return finding

    @staticmethod
    def _merge(st: SharingState, workload: Workload) -> None:
        for seen in st.seen:
            if seen.product == workload.product and seen.network == workload.network:
                seen.requests += workload.count
                seen.windows += 1
                seen.first_ms = min(seen.first_ms, workload.first_ms)
                seen.last_ms = max(seen.last_ms, workload.last_ms)
                for path, n in workload.paths.items():
                    _count_path(seen.paths, path, n)
                for rid in workload.ids:
                    _keep_smallest(seen.ids, rid, MAX_IDS)
                return
        st.seen.append(
            SeenWorkload(
                workload.product,
                workload.network,
                workload.count,
                1,
                workload.first_ms,
                workload.last_ms,
                dict(workload.paths),
                list(workload.ids),
            )
        )
        if len(st.seen) > MAX_SEEN:
            st.seen.remove(min(st.seen, key=lambda s: (s.requests, s.product, s.network)))

    def _finding(self, key: KeyState, st: SharingState, index: int) -> Finding:
        cfg = self.config
        window_ms = self._window_ms
        start_ms = index * window_ms
        seen = sorted(st.seen, key=lambda s: (-s.requests, s.product, s.network))
        total = max(st.total, 1)
        workloads: list[dict[str, Any]] = [
            {
                "product": s.product,
                "network": s.network,
                "requests": s.requests,
                "share": round(s.requests / total, 3),
                "windows": s.windows,
                "first_seen": format_time(s.first_ms),
                "last_seen": format_time(s.last_ms),
                "top_paths": [[p, n] for p, n in sorted(s.paths.items(), key=lambda kv: (-kv[1], kv[0]))][:TOP_PATHS],
                "sample_request_ids": sorted(s.ids),
            }
            for s in seen
        ]
        shown = ", ".join(f"{w['product']} from {w['network']} ({w['share']:.0%})" for w in workloads[:3])
        return Finding(
            type=ALERT_TYPE,
            id_parts=(str(start_ms),),
            time_ms=self._due(index),
            summary=(
                f"Key {key.key_id} is used by {len(workloads)} workloads that differ in client and network, together "
                f"in {len(st.qualified)} windows of {cfg.window_minutes} min within {cfg.period_hours} h: {shown}."
            ),
            evidence={
                "workloads": workloads,
                "qualifying_windows": len(st.qualified),
                "first_window": format_time(st.qualified[0] * window_ms),
                "completing_window": format_time(start_ms),
                "requests_in_windows": st.total,
                "other_requests": max(0, st.total - sum(s.requests for s in seen)),
                "network_basis": "asn" if self.geo is not None else "prefix",
                "window_minutes": cfg.window_minutes,
                "min_requests": cfg.min_requests,
                "min_windows": cfg.min_windows,
                "period_hours": cfg.period_hours,
                "late_records": st.late,
            },
        )


def _build(config: SharingConfig, context: BuildContext) -> Sharing:
    return Sharing(config, geo=context.geo, lateness_ms=context.allowed_lateness_ms)


SPEC: DetectorSpec[SharingConfig, SharingState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "medium"),),
    config=SharingConfig,
    state=SharingState,
    build=_build,
    summary=ALERT_TYPE,
)
