"""Key used from a browser (apiKey.usedFromBrowser): a request with browser provenance. The platform's rule is
never to ship a key to a browser (or a mobile app): a key in a web page or an extension is a published key.

Browser provenance, cheapest signal first: an `Origin` header, any `Sec-Fetch-*` header (only browsers send
them), or a browser user agent — a `Mozilla/5.0` string with a browser engine token (AppleWebKit, Gecko,
Chrome, Firefox, ...) and none of the tokens of SDKs, tools and bots (`python`, `curl`, `okhttp`, `bot`,
`HeadlessChrome`, ...; both lists configurable). "Mozilla/5.0 (compatible)" alone has no engine: not a browser.
The user-agent verdict is cached (bounded): a key's few agents are judged once.

Once per key per UTC day: the alert id is the key and the UTC day of its first browser request that day, so
re-processing gives the same id; the requests after it that day are counted and reported in the next alert.

State: `BrowserState`, under `browser`, only for keys that had a browser request (samples bounded).
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from keywatch.contract.events import RequestRecord, format_time
from keywatch.core.ip_baseline import range_of
from keywatch.core.spec import AlertSpec, BuildContext, Detector, DetectorSpec, Effects, Finding
from keywatch.core.state import KeyState

NAME = "browser"
ALERT_TYPE = "apiKey.usedFromBrowser"
DAY_MS = 86_400_000
MAX_ORIGINS = 3  # distinct origins kept as a sample
MAX_AGENTS = 2  # distinct user agents kept as a sample
MAX_NETWORKS = 8  # distinct /24 (/64) ranges counted; past it the count says "at least"
SAMPLE_CHARS = 96  # origins, user agents and paths are cut to this
NOT_SENT = frozenset({"", "-"})  # what gateways log for a header the client did not send

ENGINE_TOKENS = ("applewebkit", "gecko", "trident", "presto", "chrome", "chromium", "firefox", "safari", "edg/")
NON_BROWSER_TOKENS = (
    "bot", "crawler", "spider", "slurp", "curl", "wget", "python", "okhttp", "go-http-client", "axios",
    "node-fetch", "undici", "postman", "insomnia", "java", "apache-httpclient", "libwww", "httpclient", "ruby",
    "faraday", "guzzle", "php", "dart", "headlesschrome", "phantomjs", "puppeteer", "playwright", "selenium",
    "scrapy", "httpie", "scanner", "monitor", "lighthouse", "pingdom",
)  # fmt: skip


class BrowserState(msgspec.Struct, array_like=True, gc=False):
    """Browser requests of one key: the days alerted, counts and small samples."""

    day: int  # UTC day number (epoch days) of the latest alert
    prev_day: int  # ... and of the one before it (a late record of that day is not a new alert)
    total: int  # browser requests ever
    suppressed: int  # browser requests since the last alert, not alerted
    first_ms: int  # event time of the first browser request
    origins: list[str] = msgspec.field(default_factory=list)  # sample, at most MAX_ORIGINS
    agents: list[str] = msgspec.field(default_factory=list)  # sample, at most MAX_AGENTS
    networks: list[str] = msgspec.field(default_factory=list)  # at most MAX_NETWORKS distinct ranges


class BrowserConfig(BaseModel):
    """Settings of the used-from-browser detector (`[detection.browser]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    origin: bool = Field(default=True, description="An Origin header is browser provenance.")
    sec_fetch: bool = Field(default=True, description="Any Sec-Fetch-* header is browser provenance.")
    user_agent: bool = Field(default=True, description="A browser user agent is browser provenance.")
    engine_tokens: tuple[str, ...] = Field(
        default=ENGINE_TOKENS,
        description="A Mozilla/5.0 user agent is a browser's when it holds one of these (case-insensitive)...",
    )
    non_browser_tokens: tuple[str, ...] = Field(
        default=NON_BROWSER_TOKENS,
        description="... and none of these tokens of SDKs, tools, headless browsers and bots (case-insensitive).",
    )
    ignore_origins: tuple[str, ...] = Field(
        default=(), description="Origins (exact, case-insensitive) that are not browser provenance."
    )
    user_agent_cache: int = Field(default=4096, ge=16, description="User-agent verdicts kept (cleared when full).")


def _cut(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + "..."


def _site(url: str) -> str:
    """A Referer as its origin (scheme and host): its path and query never go into an alert."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _cut(url.split("/", 1)[0].split("?", 1)[0])
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return _cut(f"{scheme}://{host}")


class Browser(Detector[BrowserState]):
    """Alerts (once per key per UTC day) when a key is used with browser provenance."""

    def __init__(self, config: BrowserConfig) -> None:
        self.config = config
        self._engines = tuple(t.lower() for t in config.engine_tokens)
        self._others = tuple(t.lower() for t in config.non_browser_tokens)
        self._ignored = frozenset(o.lower() for o in config.ignore_origins)
        self._verdicts: dict[str, bool] = {}

    def is_browser_agent(self, agent: str) -> bool:
        """Whether `agent` is a browser's user agent (cached)."""
        verdict = self._verdicts.get(agent)
        if verdict is None:
            low = agent.lower()
            verdict = (
                "mozilla/5.0" in low
                and any(t in low for t in self._engines)
                and not any(t in low for t in self._others)
            )
            if len(self._verdicts) >= self.config.user_agent_cache:
                self._verdicts.clear()
            self._verdicts[agent] = verdict
        return verdict

    def signals(self, record: RequestRecord) -> list[str]:
        """The browser provenance signals of a request (empty: none). A header logged as "" or "-" was not sent."""
        cfg = self.config
        found = []
        origin = record.origin
        if origin is not None and origin not in NOT_SENT and cfg.origin and origin.lower() not in self._ignored:
            found.append("origin")
        site, mode = record.sec_fetch_site, record.sec_fetch_mode
        if cfg.sec_fetch and (
            (site is not None and site not in NOT_SENT) or (mode is not None and mode not in NOT_SENT)
        ):
            found.append("sec_fetch")
        agent = record.user_agent
        if agent is not None and cfg.user_agent and self.is_browser_agent(agent):
            found.append("user_agent")
        return found

    def on_request(self, key: KeyState, record: RequestRecord, ts_ms: int) -> Effects:
        """Find (once per UTC day) a request of the key with browser provenance."""
        if not self.config.enabled:
            return None
        agent = record.user_agent
        if (
            record.origin is None
            and record.sec_fetch_site is None
            and record.sec_fetch_mode is None
            and (agent is None or not self.is_browser_agent(agent))
        ):
            return None
        signals = self.signals(record)
        if not signals:
            return None
        day = ts_ms // DAY_MS
        st = self.state(key)
        if st is None:
            st = key.detectors[NAME] = BrowserState(day=-1, prev_day=-1, total=0, suppressed=0, first_ms=ts_ms)
        self._sample(st, record)
        st.total += 1
        st.first_ms = min(st.first_ms, ts_ms)
        if day in (st.day, st.prev_day) or day < st.day - 1:  # alerted that day (or too late to tell)
            st.suppressed += 1
            return None
        if day > st.day:
            st.prev_day, st.day = st.day, day
        else:
            st.prev_day = day
        suppressed, st.suppressed = st.suppressed, 0
        return [self._finding(record, ts_ms, day, signals, st, suppressed)]

    @staticmethod
    def _sample(st: BrowserState, record: RequestRecord) -> None:
        origin = record.origin
        if origin is not None and len(st.origins) < MAX_ORIGINS:
            shown = _cut(origin)
            if shown not in st.origins:
                st.origins.append(shown)
        agent = record.user_agent
        if agent is not None and len(st.agents) < MAX_AGENTS:
            shown = _cut(agent)
            if shown not in st.agents:
                st.agents.append(shown)
        if len(st.networks) < MAX_NETWORKS:
            net = range_of(record.ip)
            if net not in st.networks:
                st.networks.append(net)

    def _finding(
        self, record: RequestRecord, ts_ms: int, day: int, signals: list[str], st: BrowserState, suppressed: int
    ) -> Finding:
        date = format_time(day * DAY_MS)[:10]
        agent = _cut(record.user_agent) if record.user_agent is not None else None
        where = f" from {record.origin!r}" if record.origin is not None else ""
        evidence: dict[str, Any] = {
            "signals": signals,
            "origin": _cut(record.origin) if record.origin is not None else None,
            "referer": _site(record.referer) if record.referer is not None else None,
            "sec_fetch_site": record.sec_fetch_site,
            "sec_fetch_mode": record.sec_fetch_mode,
            "user_agent": agent,
            "ip": record.ip,
            "network": range_of(record.ip),
            "method": record.method,
            "path": record.path.split("?", 1)[0][:SAMPLE_CHARS],
            "status": record.status,
            "first_request_id": record.request_id,
            "first_request_at": format_time(ts_ms),
            "day": date,
            "origins": list(st.origins),
            "user_agents": list(st.agents),
            "distinct_networks": len(st.networks),
            "distinct_networks_capped": len(st.networks) >= MAX_NETWORKS,
            "browser_requests_total": st.total,
            "suppressed_since_last_alert": suppressed,
            "first_browser_request_at": format_time(st.first_ms),
        }
        return Finding(
            type=ALERT_TYPE,
            id_parts=(date,),
            summary=(
                f"Key {record.key_id} was used from a browser{where} ({', '.join(signals)}) at {record.ip}:"
                " a key shipped to a web page or extension is public."
            ),
            evidence=evidence,
        )


def _build(config: BrowserConfig, context: BuildContext) -> Browser:
    return Browser(config)


SPEC: DetectorSpec[BrowserConfig, BrowserState] = DetectorSpec(
    name=NAME,
    alerts=(AlertSpec(ALERT_TYPE, "high"),),
    config=BrowserConfig,
    state=BrowserState,
    build=_build,
    summary=ALERT_TYPE,
)
